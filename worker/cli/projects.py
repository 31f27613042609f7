"""`hbw alias` and `hbw project`: a user's projects, their metadata, and aliases that merge or
rename them. A refusal (an alias chain, an unknown project) is jobs.errors.Refused: exit 2."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import servers_for, wrap
from worker.errors import EXIT_OK, UsageError
from worker.settings import Settings


def add_alias(commands) -> None:
    parser = commands.add_parser(
        "alias",
        help="merge or rename projects with aliases",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=wrap(
            "A heartbeat whose project is an alias counts towards the aliased project, for all "
            "history: adding or removing an alias re-sums the affected projects at once (raw "
            "heartbeats are not needed, so it works for pruned days too), and afterwards no project "
            "is listed under an alias name. Aliases do not chain: an alias of an alias is refused."
        ),
        epilog="examples:\n  hbw alias add alice web-app-old web-app\n  hbw alias rm alice web-app-old\n"
        "  hbw alias list alice",
    )
    actions = parser.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="count ALIAS towards PROJECT")
    add.add_argument("user", metavar="USER")
    add.add_argument("alias", metavar="ALIAS")
    add.add_argument("project", metavar="PROJECT")
    add.set_defaults(func=alias_add)
    rm = actions.add_parser("rm", help="count ALIAS as its own project again")
    rm.add_argument("user", metavar="USER")
    rm.add_argument("alias", metavar="ALIAS")
    rm.set_defaults(func=alias_rm)
    listing = actions.add_parser("list", help="list a user's aliases")
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=alias_list)


def _transaction(settings: Settings):
    from worker.database import get_engine

    return get_engine(settings.database_url).begin()


def alias_add(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import add_alias

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        change = add_alias(conn, args.user, args.alias, args.project)
    was = f" (was an alias of {change.previous!r})" if change.previous else ""
    print(f"{change.alias!r} now counts towards {change.project!r}{was}")
    return EXIT_OK


def alias_rm(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import remove_alias

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        change = remove_alias(conn, args.user, args.alias)
    print(f"{change.alias!r} counts as its own project again (was an alias of {change.previous!r})")
    return EXIT_OK


def alias_list(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import list_aliases

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        aliases = list_aliases(conn, args.user)
    if args.json:
        print(json.dumps([{"alias": a, "project": p} for a, p in aliases]))
    for alias, project in [] if args.json else aliases:
        print(f"{alias} -> {project}")
    return EXIT_OK


def add_project(commands) -> None:
    parser = commands.add_parser(
        "project",
        help="list projects, set their display name, color, description, archived flag",
        description=wrap(
            "User-owned project metadata. Processing never overwrites it: it only sets a color, "
            "chosen from the name, when it first creates a project."
        ),
    )
    actions = parser.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="a user's projects with coding time and metadata")
    listing.add_argument("user", metavar="USER")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=project_list)
    change = actions.add_parser("set", help="set metadata of one project")
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
    change.set_defaults(func=project_set)


def project_list(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import list_projects

    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
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
    from jobs.projects import set_project_metadata

    names = ("display_name", "color", "description", "is_archived")
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if not fields:
        raise UsageError("nothing to set (see `hbw project set --help`)")
    with servers_for(settings, redis=False) as settings, _transaction(settings) as conn:
        row = set_project_metadata(conn, args.user, args.project, **fields)
    print(json.dumps(row, default=str))
    return EXIT_OK
