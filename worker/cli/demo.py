"""`hbw demo`: the whole system on a sample week, with nothing set up (worker.cli.demo_week)."""

from __future__ import annotations

import argparse

from worker.cli.common import add_command, servers_for
from worker.settings import Settings


def add_demo(commands) -> None:
    parser = add_command(
        commands, "demo", demo, help="run the whole system on a sample week and print a report"
    )
    parser.set_defaults(quiet=True)  # it shows its progress instead of log lines


def demo(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the schema, generate a realistic week of heartbeats for a few users, enqueue them, run
    workers until everything is drained, and print each user's projects with coding time, top
    languages and editors. Needs no setup: with DATABASE_URL / REDIS_URL unset it starts (and
    afterwards stops) the embedded servers. The sample is always the same week, so a second run
    stores nothing new and prints the same totals."""
    from rich.console import Console

    from worker.cli.demo_week import run_demo

    with servers_for(settings) as settings:
        return run_demo(settings, Console())
