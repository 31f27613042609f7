"""Aliases and project metadata on a populated database (SPEC section 4)."""

from __future__ import annotations

import collections

import pytest
import sqlalchemy as sa

from jobs.projects import ProjectError, add_alias, list_aliases, remove_alias, set_project_metadata
from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats


@pytest.fixture
def populated(db, settings, broker):
    stream = streams.generate(seed=17, users=6, days=4, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=250, broker=broker)
    drain(settings)
    expected = reference.compute(stream.valid)
    assert diff(expected, snapshot(db)) == []
    by_user = collections.defaultdict(list)
    for user_id, name in sorted(expected.projects, key=lambda k: -expected.projects[k].seconds):
        by_user[user_id].append(name)
    user_id, names = max(by_user.items(), key=lambda item: len(item[1]))
    assert len(names) >= 3
    return stream, user_id, names


def project_names(engine, user_id) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(sa.text("SELECT name FROM projects WHERE user_id = :u"), {"u": user_id}).scalars()
        )


def test_add_and_remove_alias_give_the_reference_with_and_without_the_alias_map(db, settings, populated):
    stream, user_id, (big, small, other, *_) = populated
    with db.begin() as conn:
        change = add_alias(conn, user_id, small, big)
    assert (change.alias, change.project, change.previous) == (small, big, None)
    assert small not in project_names(db, user_id)
    assert diff(reference.compute(stream.valid, aliases={(user_id, small): big}), snapshot(db)) == []

    # re-pointing the alias moves its history from the old project to the new one
    with db.begin() as conn:
        assert add_alias(conn, user_id, small, other).previous == big
    assert diff(reference.compute(stream.valid, aliases={(user_id, small): other}), snapshot(db)) == []

    with db.begin() as conn:
        remove_alias(conn, user_id, small)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []


def test_an_alias_survives_reprocessing_and_new_heartbeats(db, settings, broker, populated, capsys):
    stream, user_id, (big, small, *_) = populated
    with db.begin() as conn:
        add_alias(conn, user_id, small, big)
    assert (
        cli.main(["reprocess", "--since", str(stream.first_day), "--until", str(stream.last_day), "--force"])
        == 0
    )
    enqueue_heartbeats(stream.items, batch_size=300, broker=broker)  # everything again
    drain(settings)
    assert diff(reference.compute(stream.valid, aliases={(user_id, small): big}), snapshot(db)) == []


def test_new_heartbeats_under_an_alias_count_towards_its_project(db, settings, broker, populated):
    """The live path applies the alias map to what it adds (the deltas), not only recomputation."""
    stream, user_id, (big, small, *_) = populated
    with db.begin() as conn:
        add_alias(conn, user_id, small, big)
    mine = [hb for hb in stream.valid if hb["user_id"] == user_id and hb.get("project") == small]
    new = [{**hb, "entity": hb["entity"] + ".new", "time": hb["time"] + 0.5} for hb in mine]
    assert new
    enqueue_heartbeats(new, batch_size=7, broker=broker)
    drain(settings)
    aliases = {(user_id, small): big}
    assert diff(reference.compute(stream.valid + new, aliases=aliases), snapshot(db)) == []


def test_alias_to_a_project_without_heartbeats_of_its_own(db, populated):
    stream, user_id, (big, *_) = populated
    with db.begin() as conn:
        add_alias(conn, user_id, big, "renamed")
    assert "renamed" in project_names(db, user_id) and big not in project_names(db, user_id)
    assert diff(reference.compute(stream.valid, aliases={(user_id, big): "renamed"}), snapshot(db)) == []


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (("a", "b"), ("b", "c"), "has aliases of its own"),  # a -> b -> c
        (("a", "b"), ("c", "a"), "is itself an alias"),  # c -> a -> b
        (("a", "b"), ("b", "a"), "would be a cycle"),
    ],
)
def test_chains_and_cycles_are_refused(db, first, second, message):
    with db.begin() as conn:
        add_alias(conn, "u", *first)
    with pytest.raises(ProjectError, match=message), db.begin() as conn:
        add_alias(conn, "u", *second)
    with db.connect() as conn:
        assert list_aliases(conn, "u") == [first]


@pytest.mark.parametrize(
    ("alias", "project"), [("same", "same"), ("  ", "p"), ("x" * 256, "p"), ("a\x00", "p")]
)
def test_bad_alias_names_are_refused(db, alias, project):
    with pytest.raises(ProjectError), db.begin() as conn:
        add_alias(conn, "u", alias, project)


def test_removing_an_unknown_alias_is_refused(db):
    with pytest.raises(ProjectError, match="has no alias"), db.begin() as conn:
        remove_alias(conn, "u", "nope")


def test_user_metadata_survives_reprocessing_and_alias_changes(db, settings, populated):
    stream, user_id, (big, small, *_) = populated
    with db.begin() as conn:
        set_project_metadata(conn, user_id, big, display_name="Big One", color="#ABCDEF", description="mine",
                             is_archived=True)  # fmt: skip
        add_alias(conn, user_id, small, big)
    assert (
        cli.main(["reprocess", "--since", str(stream.first_day), "--until", str(stream.last_day), "--force"])
        == 0
    )
    drain(settings)
    with db.begin() as conn:
        remove_alias(conn, user_id, small)
    with db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT display_name, color, description, is_archived FROM projects WHERE user_id=:u AND name=:n"
            ),
            {"u": user_id, "n": big},
        ).one()
    assert tuple(row) == ("Big One", "#abcdef", "mine", True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"color": "red"}, "color must look like"),
        ({"owner": "me"}, "unknown project field"),
        ({"is_archived": "yes"}, "true or false"),
    ],
)
def test_bad_metadata_is_refused(db, populated, fields, message):
    _, user_id, (big, *_) = populated
    with pytest.raises(ProjectError, match=message), db.begin() as conn:
        set_project_metadata(conn, user_id, big, **fields)


def test_alias_and_project_commands(db, populated, capsys):
    _, user_id, (big, small, *_) = populated
    assert cli.main(["alias", "add", user_id, small, big]) == 0
    assert f"{small!r} now counts towards {big!r}" in capsys.readouterr().out
    assert cli.main(["alias", "list", user_id, "--json"]) == 0
    assert capsys.readouterr().out.strip() == f'[{{"alias": "{small}", "project": "{big}"}}]'
    assert cli.main(["alias", "add", user_id, big, small]) == 2
    assert "would be a cycle" in capsys.readouterr().err
    assert cli.main(["project", "set", user_id, big, "--display-name", "Big", "--archived"]) == 0
    assert '"display_name": "Big"' in capsys.readouterr().out
    assert cli.main(["project", "set", user_id, "no-such-project", "--color", "#000000"]) == 2
    assert "has no project" in capsys.readouterr().err
    assert cli.main(["alias", "rm", user_id, small]) == 0
    assert cli.main(["project", "list", user_id]) == 0
    out = capsys.readouterr().out
    assert f"{big} (Big)" in out and "[archived]" in out and small in out
    assert ["PROJECT", "COLOR", "HOURS"] in [line.split() for line in out.splitlines()]
    assert cli.main(["project", "list", "nobody-at-all"]) == 0
    assert capsys.readouterr().out.startswith("no projects for 'nobody-at-all'")
