"""The demo's run: the whole system on a sample week, from nothing to a report.

It applies the schema, generates a realistic week of heartbeats for a few users, enqueues them,
runs workers until everything is drained, and prints each user's projects with coding time, top
languages and editors. The week is fixed, so every run sends the very same heartbeats: a second
run stores nothing new and prints the same totals.
"""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from db import report as db_report
from db import stale as db_stale
from db.schema import apply_schema
from jobs.heartbeat import chunked, validate_heartbeats
from worker.cli.sample import DEMO_PROJECTS, DEMO_USERS, generate_heartbeats
from worker.database import get_engine
from worker.producer import enqueue_heartbeats
from worker.runtime.broker import setup_broker
from worker.runtime.runner import run_worker
from worker.settings import Settings

#: The sample week ends (exclusive) on this UTC day.
DEMO_END = dt.date(2025, 1, 13)
DEMO_DAYS = 7


def run_demo(settings: Settings, console: Console) -> int:
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        apply_schema(conn)
    broker = setup_broker(settings)
    items = generate_heartbeats(
        seed=2025,
        users=DEMO_USERS,
        days=DEMO_DAYS,
        end=DEMO_END,
        projects=DEMO_PROJECTS,
        sessions_per_day=(2, 6),
    )
    distinct = len({_identity(hb) for hb in validate_heartbeats(items).accepted})
    first, last = DEMO_END - dt.timedelta(days=DEMO_DAYS), DEMO_END - dt.timedelta(days=1)
    console.print(
        f"Sample: {len(items):,} heartbeats ({len(items) - distinct:,} exact duplicates) "
        f"from {len(DEMO_USERS)} users, {first} to {last}"
    )

    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        sending = progress.add_task("enqueue", total=len(items))
        for chunk in chunked(items, 500):
            enqueue_heartbeats(chunk, batch_size=settings.batch_size, broker=broker)
            progress.advance(sending, len(chunk))
        storing = progress.add_task("store raw heartbeats (deduplicated)", total=distinct)
        deriving = progress.add_task("update projects/languages/editors", total=None)
        done = threading.Event()
        watch = (engine, progress, storing, deriving, done)
        watcher = threading.Thread(target=_watch, args=watch, daemon=True)
        watcher.start()
        try:
            code = run_worker(settings, burst=True, handle_signals=True)
        finally:
            done.set()
            watcher.join()
    print_report(engine, console)
    return code


def _identity(hb: dict) -> tuple:
    """SPEC section 2's identity (the sample has no sub-microsecond times)."""
    fields = ("user_id", "entity", "type", "category", "time", "project", "branch", "language", "is_write")
    return tuple(hb.get(name) for name in fields)


def _watch(engine: sa.Engine, progress: Progress, storing, deriving, done: threading.Event) -> None:
    most_pending = 0
    while True:
        with engine.connect() as conn:
            stored = db_report.count_heartbeats(conn)
            pending, _failed = db_stale.count_pending(conn)
        most_pending = max(most_pending, pending)
        progress.update(storing, completed=stored)
        # derived work shows as "done out of the most ever pending"; nothing pending yet counts as done
        finished = most_pending - pending if most_pending else 1
        progress.update(deriving, total=most_pending or 1, completed=finished)
        if done.wait(0.2):
            return


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _shares(rows, limit: int = 3) -> str:
    total = sum(row.total_seconds for row in rows) or 1
    return ", ".join(f"{row[1]} {row.total_seconds / total:.0%}" for row in rows[:limit]) or "—"


def print_report(engine: sa.Engine, console: Console) -> None:
    with engine.connect() as conn:
        projects = db_report.select_projects(conn)
        languages = db_report.select_languages(conn)
        editors = db_report.select_editors(conn)
    for user_id, rows in projects.items():
        total = sum(row.total_seconds for row in rows)
        title = f"{user_id}: {duration(total)} of coding in {len(rows)} projects"
        table = Table(title=title, title_justify="left")
        table.add_column("project")
        table.add_column("coding time", justify="right")
        table.add_column("heartbeats", justify="right")
        table.add_column("first heartbeat")
        table.add_column("last heartbeat")
        for row in rows:
            table.add_row(
                row.name,
                duration(row.total_seconds),
                f"{row.heartbeat_count:,}",
                f"{row.first_heartbeat_at:%b %d %H:%M}",
                f"{row.last_heartbeat_at:%b %d %H:%M}",
            )
        console.print(table)
        console.print(f"  top languages: {_shares(languages.get(user_id, []))}")
        console.print(f"  editors:       {_shares(editors.get(user_id, []))}\n")
