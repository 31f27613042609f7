"""Cells (worker.cells): the user -> cell hash, the cells file, and the producer that splits a
stream by cell. No services: brokers here only collect messages."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from worker.cells import CellProducer, load_cells, main, rendezvous, score
from worker.errors import ConfigError
from worker.settings import Settings

NOW = 1_700_000_000


def test_the_assignment_is_fixed_by_its_definition():
    """Stable across runs, processes and releases: sha256(name + newline + user_id), first 8
    bytes big-endian, highest wins. These must never change (users would move)."""
    expected = {"alice": "b", "bob": "a", "carol": "b", "dave": "c", "ünïcode-user-0": "c", "user-001": "b"}
    assert {user: rendezvous(user, ("a", "b", "c")) for user in expected} == expected
    digest = hashlib.sha256(b"a\nalice").digest()
    assert score("a", "alice") == int.from_bytes(digest[:8], "big") == 5531280635892856805


def test_the_order_of_the_names_does_not_matter():
    users = [f"u{i}" for i in range(500)]
    assert [rendezvous(u, "abcd") for u in users] == [rendezvous(u, "dcba") for u in users]


def test_users_spread_evenly_over_the_cells():
    users = [f"user-{i}" for i in range(10_000)]
    shares = Counter(rendezvous(u, ("eu1", "eu2", "us1", "us2")) for u in users)
    assert set(shares) == {"eu1", "eu2", "us1", "us2"}
    for count in shares.values():
        assert abs(count / 10_000 - 0.25) < 0.02, shares


def test_adding_a_cell_moves_only_the_users_it_takes():
    users = [f"user-{i}" for i in range(10_000)]
    before = {u: rendezvous(u, ("a", "b", "c", "d")) for u in users}
    after = {u: rendezvous(u, ("a", "b", "c", "d", "e")) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert {after[u] for u in moved} == {"e"}  # nobody moves between the old cells
    assert abs(len(moved) / 10_000 - 1 / 5) < 0.02
    gone = {u: rendezvous(u, ("a", "b", "c")) for u in users}  # and removing d moves only d's users
    assert [u for u in users if gone[u] != before[u]] == [u for u in users if before[u] == "d"]


def write_cells(tmp_path, text: str) -> Settings:
    path = tmp_path / "cells.toml"
    path.write_text(text)
    return Settings(cells=path, redis_namespace="hbw")


TWO = """
[cells.a]
database_url = "postgresql://db-a/hbw"
redis_url = "redis://redis-a/0"
database_read_url = "postgresql://replica-a/hbw"

[cells.b]
database_url = "${CELL_B_DATABASE}"
redis_url = "redis://redis-b/0"
"""


def test_the_cells_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CELL_B_DATABASE", "postgresql://db-b/hbw")
    cells = load_cells(write_cells(tmp_path, TWO))
    assert cells.names == ("a", "b") and len(cells) == 2
    a, b = cells["a"].settings, cells["b"].settings
    assert (a.database_url, a.redis_url, a.database_read_url) == (
        "postgresql://db-a/hbw", "redis://redis-a/0", "postgresql://replica-a/hbw",
    )  # fmt: skip
    assert (b.database_url, b.database_read_url, b.cells) == ("postgresql://db-b/hbw", None, None)
    assert cells.cell_for("alice") == rendezvous("alice", ("a", "b"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected only"),
        ("[cells]\n", "no cells defined"),
        ('[cells.a]\ndatabase_url = "postgresql://x/y"\n', "redis_url is required"),
        ('[cells.a]\ndatabase_url = "embedded"\nredis_url = "redis://r/0"\n', "database_url is required"),
        ('[cells.a]\ndatabase_url = "postgresql://x/y"\nredis_url = "redis://r/0"\nthreads = 3\n', "unknown"),
        ('[cells.a]\ndatabase_url = "${NOT_SET_ANYWHERE}"\nredis_url = "redis://r/0"\n', "is not set"),
        ('[cells."a b"]\ndatabase_url = "postgresql://x/y"\nredis_url = "redis://r/0"\n', "NAME of"),
        ('[cells.a]\ndatabase_url = "postgresql://x/y"\nredis_url = "redis://r/0"\n'
         '[cells.b]\ndatabase_url = "postgresql://x/y"\nredis_url = "redis://s/0"\n', "same database"),
        ("[cells.a\n", "HBW_CELLS="),
    ],
)  # fmt: skip
def test_a_broken_cells_file_says_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_cells(write_cells(tmp_path, text))


class Collecting:
    """A broker that keeps what it is given."""

    def __init__(self) -> None:
        self.messages = []

    def enqueue(self, message):
        self.messages.append(message)
        return message


def test_the_producer_sends_each_heartbeat_to_its_users_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("CELL_B_DATABASE", "postgresql://db-b/hbw")
    cells = load_cells(write_cells(tmp_path, TWO))
    brokers = {"a": Collecting(), "b": Collecting()}
    users = [f"user-{i}" for i in range(20)]
    items = [{"user_id": users[i % 20], "entity": f"f{i}", "time": NOW + i} for i in range(300)]
    items[7] = {"user_id": "user-1", "time": NOW}  # no entity
    items[150] = "not a heartbeat"
    result = CellProducer(cells, batch_size=40, brokers=brokers).enqueue(items)
    assert (result.accepted, [r.index for r in result.rejected]) == (298, [7, 150])
    sent = {name: [hb for m in b.messages for hb in m.args[0]] for name, b in brokers.items()}
    assert sum(map(len, sent.values())) == result.enqueued == 298
    for name, heartbeats in sent.items():
        assert heartbeats and {cells.cell_for(hb["user_id"]) for hb in heartbeats} == {name}
    every = [m for b in brokers.values() for m in b.messages]
    assert result.messages == len(every) and all(len(m.args[0]) <= 40 for m in every)
    assert {m.options["batch_id"] for m in every} == {result.batch_id}


def test_which_and_env_for_a_shell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELL_B_DATABASE", "postgresql://db-b/hbw?sslmode=require&x=1")
    monkeypatch.setenv("HBW_CELLS", str(write_cells(tmp_path, TWO).cells))
    from worker.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["which", "alice", "bob"]) == 0
        assert (
            capsys.readouterr().out == f"alice\t{rendezvous('alice', 'ab')}\nbob\t{rendezvous('bob', 'ab')}\n"
        )
        assert main(["env", "b"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "unset HBW_CELLS" in lines and "unset DATABASE_READ_URL" in lines
        assert "export DATABASE_URL='postgresql://db-b/hbw?sslmode=require&x=1'" in lines
        assert main(["env", "--user", "alice"]) == 0
        assert f"export REDIS_URL=redis://redis-{rendezvous('alice', 'ab')}/0" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
