"""Real clients, not hand-written HTTP: npm's wakatime-client (pinned in tests/clients) reads the
user, projects, user agents, goals, summaries, stats, durations and heartbeats from `hbw serve` as it reads them from WakaTime."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.keys import create_key
from tests import reference, streams
from tests.conftest import drain
from worker.producer import enqueue_heartbeats

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


@pytest.fixture(scope="session")
def npm_client(tmp_path_factory) -> Path:
    """tests/clients installed (from its lock file) in a directory of the session's."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are needed for the npm client")
    directory = tmp_path_factory.mktemp("npm-client")
    for name in ("package.json", "package-lock.json", "read.js"):
        shutil.copy(CLIENTS / name, directory / name)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=directory,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return directory


def test_wakatime_client_from_npm_reads_what_the_workers_stored(web, db, settings, broker, npm_client):
    stream = streams.generate(seed=29, users=3, days=2, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=200, broker=broker)
    drain(settings)
    expected = reference.compute(stream.valid)
    user_id = sorted({user for user, _ in expected.projects})[0]
    with db.begin() as conn:
        key = create_key(conn, user_id)

    dates = [str(stream.first_day), str(stream.last_day)]
    done = subprocess.run(["node", "read.js", f"{web}/api/v1/", key, *dates], cwd=npm_client,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers["me"]["data"]["id"] == user_id
    assert sorted(p["name"] for p in answers["projects"]["data"]) == sorted(
        name for user, name in expected.projects if user == user_id
    )
    assert {a["value"] for a in answers["userAgents"]["data"]} == {
        agent for user, agent in expected.user_agents if user == user_id
    }
    assert answers["goals"]["data"] == []
    total = sum(t.seconds for (user, *_), t in expected.activity_days.items() if user == user_id)
    assert answers["summary"]["cumulative_total"]["seconds"] == pytest.approx(total, abs=1e-6)
    assert answers["stats"]["data"]["range"] == "last_7_days" and answers["stats"]["data"]["status"] == "ok"
    first = {
        key: t
        for key, t in expected.activity_days.items()
        if key[0] == user_id and key[1] == stream.first_day
    }
    assert len(answers["heartbeats"]["data"]) == sum(t.count for t in first.values())
    durations = sum(run["duration"] for run in answers["durations"]["data"])
    assert durations == pytest.approx(sum(t.seconds for t in first.values()), abs=1e-6)
