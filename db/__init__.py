"""PostgreSQL access: the engine factory, the schema, and query functions.

Query functions take a SQLAlchemy ``Connection`` first and never open one; the caller owns the
transaction. The SQL lives in ``db/sql/*.sql`` and ``schema.sql`` where it is easy to read.
"""
