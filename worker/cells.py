"""Cells: users hashed to independent deployments, each its own PostgreSQL, Redis and workers
(docs/cells.md).

``HBW_CELLS`` names a TOML file with one table per cell::

    [cells.eu1]
    database_url = "postgresql://hbw@pg-eu1:5432/hbw"
    redis_url = "redis://redis-eu1:6379/0"
    database_read_url = "postgresql://hbw@pg-eu1-replica:5432/hbw"   # optional

    [cells.eu2]
    database_url = "${EU2_DATABASE_URL}"      # from the environment (secrets stay out of the file)
    redis_url = "${EU2_REDIS_URL}"

A user belongs to the cell :func:`rendezvous` picks for its user_id: the cell whose
sha256(name + newline + user_id) is highest (rendezvous hashing). It depends on the set of names
only, not their order; adding a cell moves to it the ~1/(N+1) of users it now wins and no other,
removing one moves only its own users. A cell's workers are plain `hbw worker` with that cell's
DATABASE_URL and REDIS_URL; `hbw serve` serves every cell (worker.http.cells); producers split a
stream with :class:`CellProducer`. ``python -m worker.cells which USER...`` says where users
live, and ``python -m worker.cells env (CELL | --user USER)`` prints a cell's settings for a
shell, so any `hbw` command runs against it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import sys
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq

from jobs.heartbeat import Rejection, validate_heartbeat
from worker.errors import ConfigError
from worker.producer import EnqueueError, EnqueueResult, Rejections
from worker.runtime.messages import store_message
from worker.settings import EMBEDDED, Settings

#: What a cell's table may set, and the environment variable each is otherwise read from.
FIELDS = {
    "database_url": "DATABASE_URL",
    "database_read_url": "DATABASE_READ_URL",
    "redis_url": "REDIS_URL",
    "redis_sentinels": "REDIS_SENTINELS",
    "redis_master_name": "REDIS_MASTER_NAME",
    "redis_namespace": "HBW_REDIS_NAMESPACE",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def score(name: str, key: str) -> int:
    """The weight of cell `name` for `key` (a user_id): the first 8 bytes of a sha256."""
    digest = hashlib.sha256(f"{name}\n{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def rendezvous(key: str, names: Iterable[str]) -> str:
    """The cell of `key` among `names`: the highest score (ties, never seen, by name)."""
    return max(names, key=lambda name: (score(name, key), name))


@dataclass(frozen=True)
class Cell:
    name: str
    #: The deployment's settings with this cell's URLs (and namespace) in place.
    settings: Settings


class Cells:
    """The cells of a deployment, and which one each user is in."""

    MEMO = 100_000

    def __init__(self, cells: Iterable[Cell]) -> None:
        self.by_name = {cell.name: cell for cell in cells}
        if not self.by_name:
            raise ConfigError("HBW_CELLS: no cells defined (a [cells.NAME] table per cell)")
        self.names = tuple(sorted(self.by_name))
        self._memo: dict[str, str] = {}  # a user's cell, so a stream costs one hash per user

    def cell_for(self, user_id: str) -> str:
        name = self._memo.get(user_id)
        if name is None:
            if len(self._memo) >= self.MEMO:
                self._memo.clear()
            name = self._memo[user_id] = rendezvous(user_id, self.names)
        return name

    def __getitem__(self, name: str) -> Cell:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.by_name[name] for name in self.names)

    def __len__(self) -> int:
        return len(self.names)


def _expand(value: str, where: str) -> str:
    def variable(match: re.Match) -> str:
        if match.group(1) not in os.environ:
            raise ConfigError(f"{where}: ${{{match.group(1)}}} is not set in the environment")
        return os.environ[match.group(1)]

    return _VARIABLE.sub(variable, value)


def load_cells(settings: Settings) -> Cells:
    """The cells HBW_CELLS describes; a ConfigError says what is wrong with the file."""
    path = Path(settings.cells or "")
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"HBW_CELLS={path}: {e}") from None
    if set(tables) - {"cells"} or not isinstance(tables.get("cells"), dict):
        raise ConfigError(f"HBW_CELLS={path}: expected only [cells.NAME] tables")
    cells, seen = [], {}
    for name, table in tables["cells"].items():
        where = f"HBW_CELLS={path}, cell {name!r}"
        if not NAME.fullmatch(name) or not isinstance(table, dict):
            raise ConfigError(f"{where}: a cell is a [cells.NAME] table, NAME of letters, digits, _ . -")
        if unknown := set(table) - set(FIELDS):
            raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; a cell sets {sorted(FIELDS)}")
        values = {field: _expand(str(value), where) for field, value in table.items()}
        if values.get("redis_sentinels") and not values.get("redis_url"):
            if not values.get("redis_master_name"):
                raise ConfigError(f"{where}: redis_sentinels needs redis_master_name (or redis_url)")
            values["redis_url"] = f"redis://{values['redis_master_name']}/0"
        for field in ("database_url", "redis_url"):
            if not values.get(field) or values[field] == EMBEDDED:
                raise ConfigError(f"{where}: {field} is required (a server of the cell's own)")
        # nothing of the deployment's own servers carries over: only what the table says
        update = {"database_read_url": None, "redis_sentinels": "", "redis_master_name": None}
        cell_settings = settings.model_copy(update={**update, **values, "cells": None})
        redis = (cell_settings.redis_sentinels, cell_settings.redis_url, cell_settings.redis_namespace)
        for what in (("database", values["database_url"]), ("redis", *redis)):
            if what in seen:
                raise ConfigError(f"{where}: the same {what[0]} as cell {seen[what]!r}")
            seen[what] = name
        cells.append(Cell(name, cell_settings))
    return Cells(cells)


class CellProducer:
    """:func:`worker.producer.enqueue_heartbeats` across cells: each valid heartbeat goes to its
    user's cell's broker, in messages of at most `batch_size` heartbeats, each sent when full
    (memory holds one batch per cell). `brokers` by cell name (default: one per cell from its
    settings). If a broker fails, EnqueueError says how many were enqueued before."""

    def __init__(
        self, cells: Cells, *, batch_size: int, brokers: Mapping[str, dramatiq.Broker] | None = None
    ) -> None:
        if brokers is None:
            from worker.runtime.broker import make_broker

            brokers = {cell.name: make_broker(cell.settings) for cell in cells}
        self.cells, self.batch_size, self.brokers = cells, batch_size, dict(brokers)

    def enqueue(self, items: Iterable[Any], *, rejected: Rejections | None = None) -> EnqueueResult:
        """Rejections carry the item's index in `items`; one batch id for the call's messages."""
        result = EnqueueResult(rejected=[] if rejected is None else rejected, batch_id=uuid.uuid4().hex[:16])
        batches: dict[str, list[dict[str, Any]]] = {}
        for index, item in enumerate(items):
            try:
                heartbeat = validate_heartbeat(item)
            except ValueError as e:
                result.rejected.append(Rejection(index, str(e)))
                continue
            result.accepted += 1
            name = self.cells.cell_for(heartbeat["user_id"])
            batch = batches.setdefault(name, [])
            batch.append(heartbeat)
            if len(batch) == self.batch_size:
                self._send(name, batch, result)
                batches[name] = []
        for name, batch in batches.items():
            if batch:
                self._send(name, batch, result)
        return result

    def _send(self, name: str, batch: list[dict[str, Any]], result: EnqueueResult) -> None:
        try:
            self.brokers[name].enqueue(store_message(batch, result.batch_id))
        except Exception as e:
            raise EnqueueError(result, e) from e
        result.messages += 1
        result.enqueued += len(batch)


def shell_settings(cell: Cell) -> list[str]:
    """The cell's settings as shell lines (HBW_CELLS unset: the command runs on this cell alone)."""
    lines = ["unset HBW_CELLS"]
    for field, variable in FIELDS.items():
        value = getattr(cell.settings, field)
        lines.append(f"export {variable}={shlex.quote(str(value))}" if value else f"unset {variable}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m worker.cells which USER...` (USER and its cell, tab-separated) or
    `python -m worker.cells env (CELL | --user USER)`, e.g.
    ( eval "$(python -m worker.cells env --user alice)" && hbw keys create alice )."""
    from worker.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m worker.cells", description=main.__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("which").add_argument("users", metavar="USER", nargs="+")
    env = actions.add_parser("env")
    target = env.add_mutually_exclusive_group(required=True)
    target.add_argument("cell", metavar="CELL", nargs="?")
    target.add_argument("--user", metavar="USER")
    args = parser.parse_args(argv)
    settings = get_settings()
    if settings.cells is None:
        parser.error("HBW_CELLS is not set (docs/cells.md)")
    try:
        cells = load_cells(settings)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return e.exit_code
    if args.action == "which":
        print("\n".join(f"{user}\t{cells.cell_for(user)}" for user in args.users))
        return 0
    name = cells.cell_for(args.user) if args.user else args.cell
    if name not in cells.by_name:
        parser.error(f"no cell {name!r}: the cells are {', '.join(cells.names)}")
    print("\n".join(shell_settings(cells[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
