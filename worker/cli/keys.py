"""`hbw keys`: the API keys `hbw serve` accepts, in WakaTime's format, stored as hashes."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import add_command, add_group, transaction
from worker.errors import EXIT_OK
from worker.settings import Settings

KEYS = """Keys are in WakaTime's format (waka_ + a UUID v4), so plugins accept them. Only a hash is
stored: a key is shown once, when it is created. A revoked key stops working within
HBW_HTTP_KEY_CACHE_SECONDS."""


def add_keys(commands) -> None:
    actions = add_group(commands, "keys", KEYS, help="API keys of `hbw serve`: create, list, revoke")
    add_command(actions, "create", keys_create, help="issue a key for USER and print it").add_argument(
        "user", metavar="USER"
    )
    listing = add_command(
        actions, "list", keys_list, help="USER's keys (last 4 characters, created, revoked)"
    )
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = add_command(actions, "revoke", keys_revoke, help="revoke one KEY, or every key of --user")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("key", metavar="KEY", nargs="?", help="the key to revoke")
    target.add_argument("--user", metavar="USER", help="revoke all of USER's keys")


def keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Issue a new key for USER and print it: the only time it is shown."""
    from jobs.keys import create_key

    with transaction(settings) as conn:
        key = create_key(conn, args.user)
    print(key)
    return EXIT_OK


def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """USER's keys: their last 4 characters, when they were created and revoked."""
    from db.keys import list_keys

    with transaction(settings) as conn:
        keys = list_keys(conn, args.user)
    rows = [{"hint": f"...{r.hint}", "created_at": r.created_at, "revoked_at": r.revoked_at} for r in keys]
    if args.json:
        print(json.dumps(rows, default=str))
    for row in [] if args.json else rows:
        revoked = f"  revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else ""
        print(f"{row['hint']}  created {row['created_at']:%Y-%m-%d %H:%M}{revoked}")
    return EXIT_OK


def keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke one key, or every key of --user."""
    from db.keys import revoke_user_keys
    from jobs.keys import revoke_key

    with transaction(settings) as conn:
        if args.user:
            print(f"revoked {revoke_user_keys(conn, args.user)} key(s) of {args.user!r}")
        else:
            print(f"revoked a key of {revoke_key(conn, args.key)!r}")
    return EXIT_OK
