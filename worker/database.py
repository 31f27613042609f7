"""One engine per process and database URL, built on first use (never at import time)."""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa

from db.engine import create_engine


@lru_cache(maxsize=4)
def get_engine(url: str, pool_size: int = 5) -> sa.Engine:
    return create_engine(url, pool_size=pool_size)
