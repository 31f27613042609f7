"""The process layer: settings, logging, the Dramatiq broker and actors, the producer API,
worker processes and the `hbw` command line. Depends on `jobs` (and `db`), never the reverse."""
