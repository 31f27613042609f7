"""Fixtures of the HTTP ingest tests (test_web.py, test_web_auth.py, test_web_limits.py): the ingest
app on a free port, and an API key for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.keys import create_key
from tests.web_client import serve
from worker.http.app import create_app


@pytest.fixture
def web(db, broker, settings, request) -> Iterator[str]:
    """The ingest app on a free port; an indirect parameter (a dict of Settings fields) changes
    its settings. Keys are not cached, so a revocation shows at once."""
    overrides = {"http_key_cache_seconds": 0, **getattr(request, "param", {})}
    settings = settings.model_copy(update=overrides)
    yield from serve(create_app(settings, broker=broker, engine=db), settings)


@pytest.fixture
def key(db) -> str:
    with db.begin() as conn:
        return create_key(conn, "alice")
