"""No payloads in logs: a failing batch is logged with ids, counts and a one-line reason, never
its heartbeats (file paths, projects, machines), whoever writes the line: our middleware,
Dramatiq's worker and retry middleware, SQLAlchemy's error text or PostgreSQL's DETAIL."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from worker.runtime.messages import store_message
from worker.runtime.runner import run_worker

NOW = time.time()


def test_a_failing_batch_is_logged_without_its_heartbeats(db, settings, broker, log_events):
    with db.begin() as conn:
        conn.execute(sa.text("""
            CREATE FUNCTION hbw_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.entity = 'boom' THEN
                    RAISE EXCEPTION 'boom' USING DETAIL = 'row: ' || NEW.entity || ' ' || NEW.project;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER hbw_test_boom BEFORE INSERT ON heartbeats FOR EACH ROW EXECUTE FUNCTION hbw_test_boom();
        """))  # fmt: skip
    heartbeats = [{"user_id": "u", "entity": f"/home/u/secret-{i}.py", "time": NOW - 600 + i,
                   "project": "secret-project", "machine": "secret-machine"} for i in range(300)]  # fmt: skip
    heartbeats.append({"user_id": "u", "entity": "boom", "time": NOW - 10, "project": "secret-project"})
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings,), kwargs={"threads": 1, "handle_signals": False,
                                                                           "stop": stop})  # fmt: skip
    try:
        broker.enqueue(store_message(heartbeats))
        worker.start()
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "message.retrying" for e in log_events()):
            assert time.monotonic() < deadline, "the batch never failed"
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(30)
        with db.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER hbw_test_boom ON heartbeats; DROP FUNCTION hbw_test_boom()"))
    events = log_events()
    [retrying] = [e for e in events if e.get("event") == "message.retrying"][:1]
    assert retrying["error"] == "RaiseException: boom"
    assert "actors.py" in retrying["where"]  # where it failed, frames only
    text = "\n".join(str(e) for e in events)
    assert "secret" not in text, [str(e)[:300] for e in events if "secret" in str(e)]
    assert max(len(str(e)) for e in events) < 1000
