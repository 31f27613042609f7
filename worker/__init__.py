"""The process layer, in wings: `runtime` (the Dramatiq process), `cli` (`hbw`), `http`
(`hbw serve`) and `embedded` (the servers of the embedded default), over settings, logging, errors
and the producer API. Depends on `jobs` (and `db`), never the reverse (`lint-imports`)."""
