"""Every value at its limit, in worst-case bytes, goes through the whole pipeline: each text field
at its maximum length (SPEC section 1) in incompressible 4-byte characters (random CJK Extension B,
so neither UTF-8 nor PostgreSQL's compression shrinks it) is stored, derived, verified, reprocessed
and aliased exactly like any other value, and fits every index (a btree entry holds ~2.7 kB)."""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from jobs.projects import add_alias
from tests import reference
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats

LIMITS = {"user_id": 255, "entity": 4096, "project": 255, "branch": 255, "language": 64, "user_agent": 1024,
          "machine": 255}  # fmt: skip


def worst(rng: random.Random, length: int) -> str:
    """`length` random 4-byte characters (U+20000..U+2A6DF): 4 bytes each, incompressible."""
    return "".join(chr(rng.randint(0x20000, 0x2A6DF)) for _ in range(length))


def stream(rng: random.Random, users: int = 2) -> list[dict]:
    now = time.time()
    items = []
    for _ in range(users):
        fields = {name: worst(rng, length) for name, length in LIMITS.items()}
        for n in range(6):  # several heartbeats 60 s apart, so coding time is credited
            items.append({**fields, "time": now - 3600 + 60 * n, "dependencies": [worst(rng, 200)] * 3})
        # and one for a second project and user agent of the same user, each at the limit too
        items.append(
            {**fields, "project": worst(rng, 255), "user_agent": worst(rng, 1024), "time": now - 3000}
        )
    return items


def test_every_field_at_its_limit_in_worst_case_bytes_goes_through(db, settings, broker, capsys):
    rng = random.Random(2)
    items = stream(rng)
    result = enqueue_heartbeats(items, batch_size=4, broker=broker)
    assert result.rejected == [] and result.accepted == len(items)
    drain(settings, timeout=60)
    assert diff(reference.compute(items), snapshot(db)) == []
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT max(octet_length(user_agent)), max(octet_length(entity)) "
                                      "FROM heartbeats")).one()  # fmt: skip
    assert tuple(stored) == (4 * 1024, 4 * 4096)

    assert cli.main(["verify"]) == 0, capsys.readouterr().out
    assert cli.main(["reprocess", "--since", "2000-01-01", "--force"]) == 0
    drain(settings, timeout=60)
    assert diff(reference.compute(items), snapshot(db)) == []

    # An alias at its limit, for a project at its limit.
    user, project = items[0]["user_id"], items[0]["project"]
    alias = worst(rng, 255)
    with db.begin() as conn:
        add_alias(conn, user, alias, project)
    aliased = [{**item, "project": alias} if item["user_id"] == user else item for item in items]
    enqueue_heartbeats(aliased, batch_size=4, broker=broker)
    drain(settings, timeout=60)
    want = reference.compute(items + aliased, aliases={(user, alias): project})
    assert diff(want, snapshot(db)) == []


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_one_limit_value_does_not_hold_back_other_users(db, settings, broker, field):
    """A message mixing a user with a limit value and ordinary users: everyone's rows are there."""
    rng = random.Random(field)
    now = time.time()
    ordinary = [{"user_id": f"ordinary-{n}", "entity": "a.py", "time": now - 120 + n * 30, "project": "p",
                 "language": "Python", "user_agent": "vim/9.0 vim-wakatime/11.0"}
                for n in range(3)]  # fmt: skip
    limit = {
        "user_id": "limit",
        "entity": "b.py",
        "project": "q",
        "language": "Go",
        "user_agent": "emacs/29.1",
    }
    limit[field] = worst(rng, LIMITS[field])
    items = [*ordinary, {**limit, "time": now - 100}, {**limit, "time": now - 40}]
    enqueue_heartbeats(items, batch_size=100, broker=broker)
    drain(settings, timeout=60)
    assert diff(reference.compute(items), snapshot(db)) == []
