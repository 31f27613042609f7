"""`hbw keys`: the API keys `hbw serve` accepts, in WakaTime's format, stored as hashes."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import servers_for, wrap
from worker.errors import EXIT_OK
from worker.settings import Settings


def add_keys(commands) -> None:
    parser = commands.add_parser(
        "keys",
        help="API keys of `hbw serve`: create, list, revoke",
        description=wrap(
            "Keys are in WakaTime's format (waka_ + a UUID v4), so plugins accept them. Only a hash is "
            "stored: a key is shown once, when it is created. A revoked key stops working within "
            "HBW_HTTP_KEY_CACHE_SECONDS."
        ),
    )
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="issue a key for USER and print it")
    create.add_argument("user", metavar="USER")
    create.set_defaults(func=keys_create)
    listing = actions.add_parser("list", help="USER's keys (last 4 characters, created, revoked)")
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=keys_list)
    revoke = actions.add_parser("revoke", help="revoke one KEY, or every key of --user")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("key", metavar="KEY", nargs="?", help="the key to revoke")
    target.add_argument("--user", metavar="USER", help="revoke all of USER's keys")
    revoke.set_defaults(func=keys_revoke)


def _transaction(settings: Settings):
    from worker.database import get_engine

    return get_engine(settings.database_url).begin()


def keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.keys import create_key

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        key = create_key(conn, args.user)
    print(key)
    return EXIT_OK


def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from db.keys import list_keys

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        keys = list_keys(conn, args.user)
    rows = [{"hint": f"...{r.hint}", "created_at": r.created_at, "revoked_at": r.revoked_at} for r in keys]
    if args.json:
        print(json.dumps(rows, default=str))
    for row in [] if args.json else rows:
        revoked = f"  revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else ""
        print(f"{row['hint']}  created {row['created_at']:%Y-%m-%d %H:%M}{revoked}")
    return EXIT_OK


def keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from db.keys import revoke_user_keys
    from jobs.keys import revoke_key

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        if args.user:
            print(f"revoked {revoke_user_keys(conn, args.user)} key(s) of {args.user!r}")
        else:
            print(f"revoked a key of {revoke_key(conn, args.key)!r}")
    return EXIT_OK
