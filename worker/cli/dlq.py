"""`hbw dlq`: the messages that failed for good, with their reasons; retried or purged."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from worker.cli.common import add_command, add_group, positive, servers_for
from worker.errors import EXIT_OK, EXIT_REJECTED, UsageError
from worker.runtime.messages import QUEUES
from worker.settings import Settings

DLQ = """Messages that can never succeed (malformed payloads, invalid heartbeats, unknown actors)
are dead-lettered at once; others after HBW_MAX_RETRIES retries. They are kept
HBW_DEAD_LETTER_TTL_DAYS days, with the reason. Retrying puts them back on their queue with a fresh
retry budget (safe: the actors are idempotent).

examples:
  hbw dlq list
  hbw dlq retry --all --queue heartbeats
  hbw dlq purge 3f2a…
"""


def add_dlq(commands) -> None:
    actions = add_group(commands, "dlq", DLQ, help="list, retry or purge dead-lettered messages")
    listing = add_command(actions, "list", dlq_list, help="dead letters, oldest first, with the reason")
    listing.add_argument("--queue", "-Q", choices=QUEUES, metavar="QUEUE", help="only this queue")
    listing.add_argument("--limit", type=positive, help="at most this many")
    listing.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("retry", "put dead letters back on their queue"), ("purge", "delete dead letters")):
        sub = add_command(actions, action, dlq_retry_or_purge, help=text)
        sub.add_argument(
            "ids", nargs="*", metavar="ID", help="dead-letter id or message id (see `hbw dlq list`)"
        )
        sub.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
        sub.add_argument("--queue", "-Q", choices=QUEUES, metavar="QUEUE", help="only this queue")


def _letters(args: argparse.Namespace, broker) -> list:
    from worker.runtime import deadletters

    queues = [args.queue] if args.queue else list(QUEUES)
    return deadletters.list_dead_letters(broker, queues, limit=getattr(args, "limit", None))


def dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    """The dead letters, oldest first: id, queue, when it died, actor, retries and the reason."""
    from worker.runtime.broker import setup_broker

    with servers_for(settings, database=False) as settings:
        letters = _letters(args, setup_broker(settings))
    if args.json:
        print(json.dumps([letter.as_dict() for letter in letters]))
        return EXIT_OK
    for letter in letters:
        when = dt.datetime.fromtimestamp(letter.died_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{letter.redis_message_id}  {letter.queue:<11} {when}  {letter.actor or '?'}  "
            f"retries={letter.retries}  {letter.error or ''}"
        )
    print(f"{len(letters)} dead letter(s)")
    return EXIT_OK


def dlq_retry_or_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Put dead letters back on their queue with a fresh retry budget (retry), or delete them
    (purge): those named by ID (a dead-letter id or a message id), or --all (of --queue)."""
    from worker.runtime import deadletters
    from worker.runtime.broker import setup_broker

    if not args.all and not args.ids:
        raise UsageError(f"say which dead letters to {args.dlq_command}: IDs, or --all")
    with servers_for(settings, database=False) as settings:
        broker = setup_broker(settings)
        letters = _letters(args, broker)
        wanted = set(args.ids)
        chosen = [m for m in letters if args.all or {m.redis_message_id, m.message_id} & wanted]
        unknown = wanted - {i for letter in chosen for i in (letter.redis_message_id, letter.message_id)}
        if unknown:
            print(f"hbw: no dead letter {', '.join(sorted(unknown))}", file=sys.stderr)
        if args.dlq_command == "retry":
            retried, skipped = deadletters.retry(broker, chosen)
            print(f"retried {retried} dead letter(s)")
            for letter in skipped:
                print(f"  cannot retry {letter.redis_message_id}: it is not a decodable message (purge it)")
        else:
            print(f"purged {deadletters.purge(broker, chosen)} dead letter(s)")
    return EXIT_REJECTED if unknown else EXIT_OK
