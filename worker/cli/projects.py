"""`hbw alias` and `hbw project`: a user's projects, their metadata, and aliases that merge or
rename them. A refusal (an alias chain, an unknown project) is jobs.errors.Refused: exit 2."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import add_command, add_group, transaction
from worker.errors import EXIT_OK, UsageError
from worker.settings import Settings

ALIAS = """A heartbeat whose project is an alias counts towards the aliased project, for all history:
adding or removing an alias re-sums the affected projects at once (raw heartbeats are not needed,
so it works for pruned days too), and afterwards no project is listed under an alias name. Aliases
do not chain: an alias of an alias is refused.

examples:
  hbw alias add alice web-app-old web-app
  hbw alias rm alice web-app-old
  hbw alias list alice
"""


def add_alias(commands) -> None:
    actions = add_group(commands, "alias", ALIAS, help="merge or rename projects with aliases")
    add = add_command(actions, "add", alias_add, help="count ALIAS towards PROJECT")
    for name in ("user", "alias", "project"):
        add.add_argument(name, metavar=name.upper())
    rm = add_command(actions, "rm", alias_rm, help="count ALIAS as its own project again")
    for name in ("user", "alias"):
        rm.add_argument(name, metavar=name.upper())
    listing = add_command(actions, "list", alias_list, help="list a user's aliases")
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")


def alias_add(args: argparse.Namespace, settings: Settings) -> int:
    """Count ALIAS towards PROJECT, for all history (an alias of an alias is refused)."""
    from jobs.projects import add_alias

    with transaction(settings) as conn:
        change = add_alias(conn, args.user, args.alias, args.project)
    was = f" (was an alias of {change.previous!r})" if change.previous else ""
    print(f"{change.alias!r} now counts towards {change.project!r}{was}")
    return EXIT_OK


def alias_rm(args: argparse.Namespace, settings: Settings) -> int:
    """Count ALIAS as its own project again, for all history."""
    from jobs.projects import remove_alias

    with transaction(settings) as conn:
        change = remove_alias(conn, args.user, args.alias)
    print(f"{change.alias!r} counts as its own project again (was an alias of {change.previous!r})")
    return EXIT_OK


def alias_list(args: argparse.Namespace, settings: Settings) -> int:
    """A user's aliases, each with the project it counts towards."""
    from jobs.projects import list_aliases

    with transaction(settings) as conn:
        aliases = list_aliases(conn, args.user)
    if args.json:
        print(json.dumps([{"alias": a, "project": p} for a, p in aliases]))
    for alias, project in [] if args.json else aliases:
        print(f"{alias} -> {project}")
    return EXIT_OK


PROJECT = """User-owned project metadata. Processing never overwrites it: it only sets a color, chosen from
the name, when it first creates a project."""


def add_project(commands) -> None:
    actions = add_group(
        commands,
        "project",
        PROJECT,
        help="list projects, set their display name, color, description, archived flag",
    )
    listing = add_command(
        actions, "list", project_list, help="a user's projects with coding time and metadata"
    )
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")
    change = add_command(actions, "set", project_set, help="set metadata of one project")
    change.add_argument("user", metavar="USER")
    change.add_argument("project", metavar="PROJECT")
    change.add_argument("--display-name", metavar="TEXT", help="shown instead of the name ('' clears it)")
    change.add_argument("--color", metavar="#RRGGBB", help="for example #1f77b4")
    change.add_argument("--description", metavar="TEXT", help="free text ('' clears it)")
    archived = change.add_mutually_exclusive_group()
    archived.add_argument(
        "--archived", dest="is_archived", action="store_true", default=None, help="archive it"
    )
    archived.add_argument("--unarchived", dest="is_archived", action="store_false", help="unarchive it")


def project_list(args: argparse.Namespace, settings: Settings) -> int:
    """A user's projects: name (and display name), color, hours of coding time, archived or not."""
    from jobs.projects import list_projects

    with transaction(settings) as conn:
        projects = list_projects(conn, args.user)
    if args.json:
        print(json.dumps(projects, default=str))
        return EXIT_OK
    if not projects:
        print(f"no projects for {args.user!r}: no heartbeat with a project has been processed for that user")
        return EXIT_OK
    rows = [
        (
            row["name"] + (f" ({row['display_name']})" if row["display_name"] else ""),
            row["color"],
            f"{row['total_seconds'] / 3600:.2f}",
            "[archived]" if row["is_archived"] else "",
        )
        for row in projects
    ]
    width = max(len("PROJECT"), *(len(name) for name, *_ in rows))
    print(f"{'PROJECT':<{width}}  {'COLOR':<7}  {'HOURS':>8}")
    for name, color, hours, archived in rows:
        print(f"{name:<{width}}  {color:<7}  {hours:>8}  {archived}".rstrip())
    return EXIT_OK


def project_set(args: argparse.Namespace, settings: Settings) -> int:
    """Set the display name, color, description or archived flag of one project; prints the
    project as JSON."""
    from jobs.projects import set_project_metadata

    names = ("display_name", "color", "description", "is_archived")
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if not fields:
        raise UsageError("nothing to set (see `hbw project set --help`)")
    with transaction(settings) as conn:
        row = set_project_metadata(conn, args.user, args.project, **fields)
    print(json.dumps(row, default=str))
    return EXIT_OK
