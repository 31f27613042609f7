"""Which servers a command uses (worker.embedded.servers): both URLs unset is the embedded default, one
without the other is refused unless embedding is asked for, and URLs are shown without passwords."""

from __future__ import annotations

import pytest

from db.errors import redact
from worker.embedded import EmbeddedError
from worker.embedded.servers import to_embed
from worker.settings import Settings

PG, REDIS = "postgresql://u:pw@db:5432/hbw", "redis://:pw@cache:6379/0"


def settings(database: str | None, redis: str | None) -> Settings:
    return Settings(**{"DATABASE_URL": database, "REDIS_URL": redis})


@pytest.mark.parametrize(
    ("database", "redis", "needs", "embedded"),
    [
        (None, None, (True, True), (True, True)),  # the embedded default
        ("", "", (True, True), (True, True)),
        (PG, REDIS, (True, True), (False, False)),
        (PG, "embedded", (True, True), (False, True)),  # asked for explicitly
        ("embedded", REDIS, (True, True), (True, False)),
        ("embedded", "embedded", (True, True), (True, True)),
        ("embedded", None, (True, True), (True, True)),
        (PG, None, (True, False), (False, False)),  # `hbw db init` needs no Redis
        (None, REDIS, (False, True), (False, False)),  # nor `hbw enqueue` a database
    ],
)
def test_what_is_embedded(database, redis, needs, embedded):
    assert to_embed(settings(database, redis), database=needs[0], redis=needs[1]) == embedded


@pytest.mark.parametrize(
    ("database", "redis", "needs", "message"),
    [
        (PG, None, (True, True), "DATABASE_URL is set but REDIS_URL is not: set REDIS_URL too, or REDIS_URL=embedded"),
        (PG, None, (False, True), "DATABASE_URL is set but REDIS_URL is not"),
        (None, REDIS, (True, True), "REDIS_URL is set but DATABASE_URL is not: set DATABASE_URL too, or DATABASE_URL=embedded"),
        (None, REDIS, (True, False), "REDIS_URL is set but DATABASE_URL is not"),
    ],
)  # fmt: skip
def test_one_url_without_the_other_is_refused(database, redis, needs, message):
    with pytest.raises(EmbeddedError, match=message.replace("(", r"\(")):
        to_embed(settings(database, redis), database=needs[0], redis=needs[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:s3cr3t@127.0.0.1:54329/hbw", "postgresql://postgres:***@127.0.0.1:54329/hbw"),
        ("redis://:s3cr3t@127.0.0.1:63799/0", "redis://:***@127.0.0.1:63799/0"),
        ("redis://user:p%40ss@host:6379/0?ssl=true", "redis://user:***@host:6379/0?ssl=true"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (None, None),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown
