"""`hbw enqueue`: heartbeats from a file or stdin onto the queue, validated as they are read."""

from __future__ import annotations

import argparse
import sys

from worker.cli.common import add_command, positive, servers_for
from worker.errors import EXIT_FAILED
from worker.settings import Settings


def add_enqueue(commands) -> None:
    parser = add_command(commands, "enqueue", enqueue, help="validate heartbeats and enqueue them")
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="input file, or - for stdin (default)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--batch-size", type=positive, help="heartbeats per message (default HBW_BATCH_SIZE)")


def enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Read heartbeats (JSON lines, or a JSON array), validate each one, and enqueue the valid
    ones in messages of at most HBW_BATCH_SIZE heartbeats, as the input is read: memory does not
    grow with its size. Invalid items are reported with their index and the reason (with the
    line number for input that is not even JSON); the valid ones are enqueued anyway.

    exit codes: 0 all accepted, 2 some rejected (the rest enqueued), 1 could not enqueue (the
    output says how many were enqueued before the failure)

    example:
      hbw enqueue heartbeats.jsonl --json
    """
    from worker.cli.input import RejectionSpool, open_input, read_items
    from worker.errors import describe
    from worker.producer import EnqueueError, enqueue_heartbeats
    from worker.runtime.broker import setup_broker

    with open_input(args.file) as stream, RejectionSpool() as rejected:
        with servers_for(settings, database=False) as settings:
            broker, batch_size = setup_broker(settings), args.batch_size or settings.batch_size
            try:  # streams: validated and enqueued a batch at a time as the input is read
                result = enqueue_heartbeats(
                    read_items(stream), batch_size=batch_size, broker=broker, rejected=rejected
                )
                error, code = None, result.exit_code
            except EnqueueError as e:
                result, code = e.result, EXIT_FAILED
                error = f"could not enqueue: {describe(e.cause)} ({e.progress})"
        if args.json:
            result.write_json(sys.stdout, **({"error": error} if error else {}))
        else:
            print(f"accepted: {result.accepted}")
            print(f"rejected: {len(result.rejected)}")
            for rejection in result.rejected:
                print(f"  item {rejection.index}: {rejection.reason}")
            print(f"enqueued: {result.enqueued} heartbeats in {result.messages} message(s)")
    if error:
        print(f"hbw: {error}", file=sys.stderr)
    return code
