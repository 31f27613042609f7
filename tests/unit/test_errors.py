"""worker.errors: which failure is a configuration problem (3) and which a server that may answer
later (1), and that no line carries a password."""

from __future__ import annotations

import psycopg
import pytest
import redis
import sqlalchemy as sa
from pydantic import ValidationError

from db.errors import redact
from worker.errors import ConfigError, HbwError, Unavailable, check_urls, explain, settings_problem
from worker.settings import Settings

DB = "postgresql://alice:s3cret@db.internal:5433/hbw"
REDIS = "redis://:s3cret@cache.internal:6380/0"
AT = 'connection failed: connection to server at "10.0.0.5", port 5433 failed: '


def wrapped(message: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


@pytest.mark.parametrize(
    ("error", "kind", "says"),
    [
        (wrapped(AT + "Connection refused\n\tIs the server running?"), Unavailable,
         "cannot connect to PostgreSQL at db.internal:5433 (connection refused): is it running? check DATABASE_URL"),
        (wrapped(AT + "FATAL:  the database system is starting up"), Unavailable, "(the database system is starting up)"),
        (wrapped(AT + "timeout expired"), Unavailable, "(timeout expired)"),
        (wrapped(AT + 'FATAL:  database "hbw" does not exist'), ConfigError,
         'PostgreSQL at db.internal:5433 has no database "hbw": create it (createdb) or fix DATABASE_URL'),
        (wrapped(AT + 'FATAL:  password authentication failed for user "alice"'), ConfigError,
         'refused the login (password authentication failed for user "alice"): check DATABASE_URL'),
        (wrapped(AT + 'FATAL:  role "database" does not exist'), ConfigError, "refused the login"),
        (wrapped("failed to resolve host 'db.internal': [Errno -2] Name or service not known"), ConfigError,
         'cannot resolve the PostgreSQL host "db.internal": check DATABASE_URL'),
        (psycopg.errors.UndefinedTable('relation "api_keys" does not exist'), ConfigError,
         'the database "hbw" has no heartbeat-worker schema, or an older one (relation "api_keys" does not exist): run `hbw db init`'),
        (redis.ConnectionError("Error 111 connecting to cache.internal:6380. Connection refused."), Unavailable,
         "cannot connect to Redis at cache.internal:6380 (connection refused): is it running? check REDIS_URL"),
        (redis.TimeoutError("Timeout connecting to server"), Unavailable, "check REDIS_URL"),
        (redis.AuthenticationError("invalid username-password pair or user is disabled."), ConfigError,
         "refused the login (invalid username-password pair or user is disabled.): check the password in REDIS_URL"),
        (redis.ConnectionError("Error -2 connecting to cache.internal:6380. Name or service not known."),
         ConfigError, 'cannot resolve the Redis host "cache.internal": check REDIS_URL'),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), HbwError,
         "is out of memory (maxmemory reached)"),
    ],
)  # fmt: skip
def test_known_failures_say_what_to_do_with_the_right_exit_code(error, kind, says):
    problem = explain(error, DB, REDIS)
    assert type(problem) is kind and says in str(problem)
    assert problem.exit_code == {Unavailable: 1, HbwError: 1, ConfigError: 3}[kind]
    assert "s3cret" not in str(problem) and "\n" not in str(problem)


def test_unknown_failures_are_left_to_the_last_resort():
    assert explain(KeyError("x"), DB, REDIS) is None


def test_passwords_are_redacted_from_any_url():
    assert redact(f"cannot use {DB} or {REDIS}") == (
        "cannot use postgresql://alice:***@db.internal:5433/hbw or redis://:***@cache.internal:6380/0"
    )


@pytest.mark.parametrize(
    ("database_url", "redis_url", "says"),
    [
        ("mysql://root:pw@db/hbw", None, "DATABASE_URL is not a PostgreSQL URL"),
        ("not a url", None, "DATABASE_URL is not a PostgreSQL URL"),
        (None, "http://cache:6379", "REDIS_URL is not a Redis URL"),
    ],
)
def test_malformed_urls_are_configuration_problems(database_url, redis_url, says):
    with pytest.raises(ConfigError, match=says):
        check_urls(database_url, redis_url)
    check_urls("postgres://u@h/db", "rediss://h:6380/1")  # the accepted spellings


def test_a_bad_setting_names_its_variable_not_its_value(monkeypatch):
    monkeypatch.setenv("HBW_THREADS", "0")
    monkeypatch.setenv("HBW_LOG_FORMAT", "s3cret")
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = settings_problem(caught.value)
    assert line.startswith("configuration error: HBW_THREADS: Input should be greater than or equal to 1; ")
    assert "HBW_LOG_FORMAT" in line and "s3cret" not in line
