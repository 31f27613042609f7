"""API keys of the HTTP ingest, stored as hashes (see jobs.keys for the key format)."""

from __future__ import annotations

import sqlalchemy as sa

from db.queries import query


def insert_key(conn: sa.Connection, key_hash: bytes, user_id: str, hint: str) -> None:
    conn.execute(query("insert_key"), {"key_hash": key_hash, "user_id": user_id, "hint": hint})


def select_key_user(conn: sa.Connection, key_hash: bytes) -> str | None:
    return conn.execute(query("select_key_user"), {"key_hash": key_hash}).scalar()


def revoke_key(conn: sa.Connection, key_hash: bytes) -> str | None:
    """Revoke one key; returns its user, or None when no live key had that hash."""
    return conn.execute(query("revoke_key"), {"key_hash": key_hash}).scalar()


def revoke_user_keys(conn: sa.Connection, user_id: str) -> int:
    return len(conn.execute(query("revoke_user_keys"), {"user_id": user_id}).all())


def list_keys(conn: sa.Connection, user_id: str) -> list[sa.Row]:
    return list(conn.execute(query("list_keys"), {"user_id": user_id}))
