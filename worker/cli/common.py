"""What the commands share: how a command is declared (its handler's docstring is its description),
argument types, the servers a command uses, one transaction, progress bars and the day range of
the commands that take one."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.errors import ConfigError, UsageError
from worker.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa


def wrap(text: str) -> str:
    """Subcommand descriptions, wrapped like the rest of the help (the formatter keeps epilogs raw)."""
    return textwrap.fill(text, 92)


def add_command(commands, name: str, func, *, help: str):
    """Declare the (sub)command `name` run by `func`; returns its parser, for its arguments. The
    handler's docstring is the help (see :func:`_parser`)."""
    parser = _parser(commands, name, func.__doc__, help)
    parser.set_defaults(func=func)
    return parser


def add_group(commands, name: str, about: str, *, help: str):
    """Declare a command of several actions (`hbw dlq list`), described by `about`; returns what to
    add the actions to."""
    parser = _parser(commands, name, about, help)
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def _parser(commands, name: str, about: str, help: str) -> argparse.ArgumentParser:
    """A command's parser: the first paragraph of `about` is its description (wrapped), the rest
    (exit codes, examples) is shown as written."""
    description, _, epilog = inspect.cleandoc(about or "").partition("\n\n")
    return commands.add_parser(
        name,
        help=help,
        description=wrap(description),
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def add_days(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--date, --yesterday or --since [--until], and --user: the user-days a command works on."""
    when = parser.add_mutually_exclusive_group(required=required)
    when.add_argument(
        "--date", type=date_arg, metavar="YYYY-MM-DD", help="one day (each user's own calendar day)"
    )
    when.add_argument("--yesterday", action="store_true", help="yesterday (today's UTC date minus one)")
    when.add_argument("--since", type=date_arg, metavar="YYYY-MM-DD", help="first day of a range")
    parser.add_argument("--until", type=date_arg, metavar="YYYY-MM-DD", help="last day (default: today)")
    parser.add_argument("--user", metavar="USER_ID", help="only this user")


def day_range(args: argparse.Namespace, *, default_since: dt.date | None) -> tuple[dt.date, dt.date]:
    """The (first, last) day the arguments of add_days (or --since/--until alone) name."""
    today = dt.datetime.now(dt.UTC).date()
    if getattr(args, "yesterday", False):
        return today - dt.timedelta(days=1), today - dt.timedelta(days=1)
    if getattr(args, "date", None):
        if args.until:
            raise UsageError("--until goes with --since")
        return args.date, args.date
    since, until = args.since or default_since, args.until or today
    if since is None:
        since = until
    if until < since:
        raise UsageError(f"--until {until} is before --since {since}")
    return since, until


@contextlib.contextmanager
def servers_for(
    settings: Settings, *, database: bool = True, redis: bool = True, kept_by: set[int] | None = None
) -> Iterator[Settings]:
    """The servers a command uses (worker.embedded.servers.hold_servers); their problems are
    configuration errors."""
    from worker.embedded import EmbeddedError
    from worker.embedded.servers import hold_servers

    try:
        with hold_servers(settings, database=database, redis=redis, kept_by=kept_by) as settings:
            yield settings
    except EmbeddedError as e:
        raise ConfigError(str(e)) from None


@contextlib.contextmanager
def transaction(settings: Settings) -> Iterator[sa.Connection]:
    """One transaction on the database the command uses (embedded or not)."""
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        yield conn


def progress_bar(*, disable: bool = False):
    """A bar for long work: what, how far, how many of how many, how long so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=disable)


def follow(bar, description: str):
    """A task on `bar` and the progress callback (done, total) that moves it."""
    task = bar.add_task(description, total=None)
    return lambda done, total: bar.update(task, completed=max(done, 0), total=total)
