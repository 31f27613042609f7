"""Narrowing down a derived message that fails by itself (jobs.recompute.narrow), and telling
the database's failures from the data's (db.errors.is_transient)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
import sqlalchemy as sa

from db.errors import is_transient
from jobs.recompute import narrow

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)


def test_several_users_become_one_part_per_user():
    assert narrow([("b", D1), ("a", D2), ("a", D1)], alone=False) == [([("a", D1), ("a", D2)], False),
                                                                     ([("b", D1)], False)]  # fmt: skip


def test_one_user_becomes_one_part_per_day_alone():
    assert narrow([("a", D2), ("a", D1)], alone=False) == [([("a", D1)], True), ([("a", D2)], True)]
    # one day with the user's other pending days riding along: that day alone first
    assert narrow([("a", D1)], alone=False) == [([("a", D1)], True)]


def test_one_day_alone_is_as_narrow_as_it_gets():
    assert narrow([("a", D1)], alone=True) == []


def wrapped(error: Exception) -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError.instance("SELECT 1", {}, error, psycopg.Error)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.DeadlockDetected(), True),
        (psycopg.errors.SerializationFailure(), True),
        (psycopg.errors.AdminShutdown(), True),
        (psycopg.errors.QueryCanceled(), True),  # statement timeout
        (psycopg.errors.LockNotAvailable(), True),
        (psycopg.OperationalError("connection to server at 127.0.0.1 failed"), True),  # no SQLSTATE
        (psycopg.DataError("timestamp too large (after year 10K)"), False),  # the driver's own, no SQLSTATE
        (psycopg.errors.ProgramLimitExceeded(), False),  # an index row too large
        (psycopg.errors.StringDataRightTruncation(), False),
        (psycopg.errors.RaiseException(), False),
        (psycopg.errors.UniqueViolation(), False),
        (ValueError("a bug met by one user's data"), False),
    ],
)
def test_transient_means_the_database_not_the_data(error, transient):
    assert is_transient(error) is transient
    if isinstance(error, psycopg.Error):
        assert is_transient(wrapped(error)) is transient
