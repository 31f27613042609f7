"""One user whose derived rows cannot be written holds back nobody else: the live update that
covered many users is retried per user, and only that user's deltas are set aside and the message
dead-lettered with the reason; a reprocess of that user-day is retried per user, then per day, and
only that user-day is set aside and dead-lettered; `hbw status`, the reprocess run and
`hbw dlq retry` find them."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import sqlalchemy as sa

from tests import reference
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats

NOW = time.time()
POISON = "poison-user"
BREAK = f"""
CREATE FUNCTION hbw_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = '{POISON}' THEN
        RAISE EXCEPTION 'this row cannot be written';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hbw_test_refuse BEFORE INSERT OR UPDATE ON project_days
FOR EACH ROW EXECUTE FUNCTION hbw_test_refuse();
"""
MEND = "DROP TRIGGER hbw_test_refuse ON project_days; DROP FUNCTION hbw_test_refuse()"


def stream() -> list[dict]:
    users = [f"user-{n}" for n in range(5)] + [POISON]
    return [{"user_id": user, "entity": f"{user}.py", "time": NOW - 900 + 60 * i, "project": "p",
             "language": "Go", "user_agent": "vim/9.0 vim-wakatime/11.0"}
            for user in users for i in range(4)]  # fmt: skip


def cli_json(capsys, *args: str):
    code = cli.main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_failing_user_day_is_set_aside_and_the_others_are_computed(db, settings, broker, capsys):
    items = stream()
    day = dt.datetime.fromtimestamp(NOW - 900, dt.UTC).date()
    with db.begin() as conn:
        conn.execute(sa.text(BREAK))
    try:
        enqueue_heartbeats(items, batch_size=1000, broker=broker)  # one message: every user-day in it
        drain(settings, timeout=60)  # ends: nothing is retried for ever, nothing resent by the sweeper

        # Everything is computed but the one user's projects (its languages and editors too).
        assert diff(reference.compute(items), snapshot(db)) == [
            f"projects: keys differ: missing [('{POISON}', 'p')], extra []",
            "1 derived updates still pending",
        ]
        _, letters = cli_json(capsys, "dlq", "list")
        [letter] = letters
        assert (letter["queue"], letter["actor"]) == ("projects", "update_projects")
        assert letter["error"] == (f"PoisonMessage: projects of user '{POISON}' fails by itself: "
                                   "RaiseException: this row cannot be written")  # fmt: skip
        _, status = cli_json(capsys, "status")
        assert (status["pending_recomputes"], status["failed_recomputes"]) == (0, 1)

        # The daily job tries the user-day again and reports the failure as soon as it is known.
        stop, worker = running_worker(settings)
        try:
            code = cli.main(["reprocess", "--date", str(day), "--user", POISON, "--wait", "--timeout", "120"])
            assert code == 1  # failed, not timed out:
            assert "1 recomputation(s) failed and were dead-lettered" in capsys.readouterr().err
        finally:
            stop.set()
            worker.join(60)
        _, letters = cli_json(capsys, "dlq", "list")
        [recomputing] = [letter for letter in letters if letter["queue"] == "recompute"]
        assert recomputing["args"] == [[[POISON, str(day)]]]
        assert recomputing["error"] == (f"PoisonMessage: recomputing user '{POISON}' on {day} fails by itself: "
                                        "RaiseException: this row cannot be written")  # fmt: skip
    finally:
        with db.begin() as conn:
            conn.execute(sa.text(MEND))

    # Mended: retrying the dead letters computes it, and nothing is left over.
    assert cli.main(["dlq", "retry", "--all"]) == 0
    capsys.readouterr()
    drain(settings, timeout=60)
    assert diff(reference.compute(items), snapshot(db)) == []
    assert cli.main(["verify"]) == 0


def running_worker(settings) -> tuple[threading.Event, threading.Thread]:
    from worker.runtime.runner import run_worker

    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings,), kwargs={"threads": 2, "handle_signals": False,
                                                                           "stop": stop})  # fmt: skip
    worker.start()
    return stop, worker
