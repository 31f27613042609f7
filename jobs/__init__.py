"""The domain: what a valid heartbeat is, its identity, user-agent parsing, and the store and
recompute operations the actors run (each inside a transaction the caller owns)."""
