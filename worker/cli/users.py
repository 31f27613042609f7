"""`hbw user`: a user's own settings; for now the time zone their days are counted in."""

from __future__ import annotations

import argparse

from worker.cli.common import add_command, add_group, servers_for, transaction
from worker.errors import EXIT_OK
from worker.settings import Settings

USER = """A user's own settings. Their time zone decides their days: coding time stops at their
local midnight, and summaries, stats and the status bar count their local days.

examples:
  hbw user show alice
  hbw user set alice --timezone Europe/Paris
"""


def add_user(commands) -> None:
    actions = add_group(commands, "user", USER, help="show or set a user's time zone")
    show = add_command(actions, "show", user_show, help="a user's time zone")
    show.add_argument("user", metavar="USER")
    change = add_command(actions, "set", user_set, help="set a user's time zone")
    change.add_argument("user", metavar="USER")
    change.add_argument("--timezone", required=True, metavar="ZONE", help="an IANA name: Europe/Paris, UTC")


def user_show(args: argparse.Namespace, settings: Settings) -> int:
    """A user's time zone (UTC unless set)."""
    from jobs.users import time_zone

    with transaction(settings) as conn:
        print(f"{args.user}: time zone {time_zone(conn, args.user)}")
    return EXIT_OK


def user_set(args: argparse.Namespace, settings: Settings) -> int:
    """Count a user's days in another time zone, for all their history: the workers recompute it
    (their pending work shows in `hbw status` until they have). Refused for a user with pruned
    days, whose history cannot move to another calendar."""
    from jobs.users import set_time_zone
    from worker.database import get_engine
    from worker.runtime.broker import setup_broker
    from worker.runtime.outbox import send_recomputes

    with servers_for(settings) as settings:
        engine = get_engine(settings.database_url)
        with engine.begin() as conn:
            keys = set_time_zone(conn, args.user, args.timezone)
        if not keys:
            print(f"{args.user}: time zone {args.timezone.strip()} (unchanged)")
            return EXIT_OK
        send_recomputes(
            engine, keys, keys_per_message=settings.recompute_keys_per_message, broker=setup_broker(settings)
        )
    print(
        f"{args.user}: time zone {args.timezone.strip()}; {len(keys)} day(s) of history handed to the workers"
    )
    return EXIT_OK
