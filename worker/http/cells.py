"""`hbw serve` in front of every cell (HBW_CELLS, worker.cells, docs/cells.md).

Each cell gets the whole app of worker.http.app on its own PostgreSQL and Redis, in this process;
a request goes to the app of its API key's cell, which authenticates, rate-limits, queues and
reads exactly as it does alone. Keys live in their user's cell (`hbw keys create` run against it),
so the router finds a key's cell by asking every cell's key table at once, in threads of that
cell's own (a hung cell holds only its own), once per key and process: a hit costs a dict lookup.
Revocation stays the cell app's (HBW_HTTP_KEY_CACHE_SECONDS, as without cells). A key
counts only in its user's cell (worker.cells.rendezvous): found elsewhere (a user being moved, a
key made in the wrong cell) it is unknown there. When a cell does not answer, only keys that may
be there are refused (503); the others are served.

A client's failed authentications count in the Redis of one cell chosen by its address (a Redis
that is away lets requests through uncounted): a key no cell holds is answered 401 by the router
itself, so no app ever sees a key outside its user's cell; a request without a well-formed key
goes to that cell's app, which answers 401. ``/readyz`` is ready while any cell takes writes,
and lists each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from db.engine import create_engine
from db.errors import describe_error
from db.keys import select_key_user
from jobs.keys import hash_key, normalize_key
from worker.cells import Cells, load_cells
from worker.http.app import create_app
from worker.http.auth import Unauthorized, key_from_request
from worker.http.metrics import LATENCY, METHODS, REQUESTS, UNMATCHED
from worker.http.ratelimit import Budgets, RateLimited, address_bucket
from worker.http.responses import json_response, unavailable
from worker.logs import get_logger
from worker.runtime.broker import make_broker
from worker.settings import Settings

log = get_logger("hbw.http")


class CellsUnavailable(Exception):
    """A key's cell cannot be known: a cell that may hold it did not answer."""


class KeyDirectory:
    """Key hash -> its cell's name, or None when no cell holds it (kept `ttl` seconds, so a new
    key works within that time). A found key's cell is kept until the process ends (or the cache
    fills): a key's user never changes and the cell map is read once per process, so that answer
    cannot go stale; revoking a key is its cell's app's business, as it is without cells."""

    MAX_ENTRIES = 100_000
    MISS = object()

    def __init__(self, cells: Cells, engines: Mapping[str, sa.Engine], *, ttl: float, timeout: float) -> None:
        self.cells, self.engines, self.ttl, self.timeout = cells, engines, ttl, timeout
        self.pools = {name: ThreadPoolExecutor(4, thread_name_prefix=f"hbw-cell-{name}") for name in engines}
        self._entries: dict[bytes, tuple[str | None, float]] = {}

    def cached(self, key_hash: bytes) -> str | object | None:
        entry = self._entries.get(key_hash)
        return entry[0] if entry and entry[1] > time.monotonic() else self.MISS

    def _user(self, name: str, key_hash: bytes) -> str | None:
        with self.engines[name].connect() as conn:
            return select_key_user(conn, key_hash)

    async def ask(self, each: Callable[[str], Any]) -> tuple[dict[str, Any], list[str]]:
        """`each(cell name)` for every cell at once, in the cell's threads: (answers, cells that
        failed or took longer than the timeout)."""
        asks = {name: asyncio.wrap_future(pool.submit(each, name)) for name, pool in self.pools.items()}
        done, _ = await asyncio.wait(asks.values(), timeout=self.timeout)
        answers, failed = {}, []
        for name, ask in asks.items():
            if ask in done and ask.exception() is None:
                answers[name] = ask.result()
                continue
            failed.append(name)
            error = describe_error(ask.exception()) if ask in done else f"no answer in {self.timeout:g}s"
            ask.cancel()
            log.warning("cells.unavailable", cell=name, error=error)
        return answers, failed

    async def find(self, key_hash: bytes) -> str | None:
        """The key's cell, or None; raises CellsUnavailable (nothing cached) when unsure."""
        answers, failed = await self.ask(lambda name: self._user(name, key_hash))
        found = {name: user for name, user in answers.items() if user is not None}
        homes = {name: self.cells.cell_for(user) for name, user in found.items()}
        home = [name for name, cell in homes.items() if cell == name]
        if not home and (set(homes.values()) & set(failed) or (failed and not found)):
            raise CellsUnavailable(", ".join(failed))  # where the key may count did not answer
        if found and not home:
            log.warning(
                "cells.misplaced_key", found_in=sorted(found), users_cells=sorted(set(homes.values()))
            )
        cell = home[0] if home else None
        if cell or self.ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = (cell, time.monotonic() + self.ttl if cell is None else math.inf)
        return cell

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for engine in self.engines.values():
            engine.dispose()


class CellRouter:
    """The ASGI app of `hbw serve` with cells: each request to its key's cell's app."""

    def __init__(
        self, cells: Cells, apps: Mapping[str, Any], brokers: Mapping[str, Any],
        budgets: Mapping[str, Budgets], directory: KeyDirectory,
    ) -> None:  # fmt: skip
        self.cells, self.apps, self.brokers, self.budgets = cells, apps, brokers, budgets
        self.directory = directory

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == "/readyz":
            await self._own(await self._readyz(), scope, receive, send)
        elif scope["type"] != "http":
            await self.apps[self.cells.names[0]](scope, receive, send)
        else:
            cell = await self._route(Request(scope))
            if isinstance(cell, Response):
                await self._own(cell, scope, receive, send)
            else:
                await self.apps[cell](scope, receive, send)

    async def _route(self, request: Request) -> str | Response:
        """The cell whose app answers `request`, or the router's own answer: 401 and 429 for keys
        no cell holds (so no app ever sees a key outside its user's cell), 503 when unsure."""
        address = address_bucket(request.client and request.client.host)
        fallback = self.cells.cell_for(f"address:{address}")  # where the address's failures count
        try:
            normalized = normalize_key(key_from_request(request))
        except Unauthorized:
            normalized = None
        if normalized is None:
            return fallback  # no key to look up: that cell's app answers 401
        key_hash = hash_key(normalized)
        cell = self.directory.cached(key_hash)
        try:
            if cell is KeyDirectory.MISS:
                await run_in_threadpool(self._budget, fallback, "check_address", address)
                cell = await self.directory.find(key_hash)
            if cell is None:
                await run_in_threadpool(self._budget, fallback, "record_failure", address)
                return json_response({"error": "unknown or revoked API key"}, 401)
        except RateLimited as e:
            return json_response({"error": e.message}, 429, {"Retry-After": str(e.retry_after)})
        except CellsUnavailable:
            error = unavailable()
            return json_response({"error": error.message}, error.status, error.headers)
        return cell

    def _budget(self, name: str, check: str, address: str) -> None:
        """The address's failure budget in cell `name`; raises RateLimited. When that cell's
        Redis is away the failures cannot be counted, and the request goes on."""
        try:
            getattr(self.budgets[name], check)(address)
        except redis.RedisError as e:
            log.warning("cells.budget_unavailable", cell=name, error=describe_error(e))

    async def _readyz(self) -> Response:
        from worker.runtime.redis_memory import check_writes

        def writable(name: str) -> str:
            memory = check_writes(self.brokers[name].client, self.brokers[name].namespace)
            if memory.writable:
                return "ok"
            return "redis out of memory" if memory.out_of_memory else "redis refuses writes"

        answers, _ = await self.directory.ask(writable)
        states = {name: answers.get(name, "redis unavailable") for name in self.cells.names}
        ready = "ok" in states.values()
        return json_response({"ok": ready, "cells": states}, 200 if ready else 503)

    async def _own(self, response: Response, scope, receive, send) -> None:
        """An answer of the router itself, counted as the apps count theirs (worker.http.metrics)."""
        started = time.perf_counter()
        await response(scope, receive, send)
        routes = self.apps[self.cells.names[0]].router.routes
        route = next((r.path for r in routes if r.matches(scope)[0] is Match.FULL), UNMATCHED)
        method = scope["method"] if scope["method"] in METHODS else "other"
        REQUESTS.labels(route, method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)

    async def _lifespan(self, receive, send) -> None:
        """Every cell's app starts and stops with the router."""
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.directory.close)
            try:
                for app in self.apps.values():
                    await stack.enter_async_context(app.router.lifespan_context(app))
            except Exception as e:
                await send({"type": "lifespan.startup.failed", "message": describe_error(e)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def create_cells_app(settings: Settings, cells: Cells | None = None) -> CellRouter:
    """One app per cell (its own broker, key and read pools) behind the router."""
    cells = cells or load_cells(settings)
    apps, brokers, engines, budgets = {}, {}, {}, {}
    for cell in cells:
        s = cell.settings
        brokers[cell.name] = broker = make_broker(s)
        engines[cell.name] = engine = create_engine(s.database_url, pool_size=5)
        apps[cell.name] = create_app(s, broker=broker, engine=engine)
        budgets[cell.name] = Budgets(
            broker.client, broker.namespace, per_key_per_minute=s.http_rate_limit_per_minute,
            auth_failures_per_minute=s.http_auth_failures_per_minute,
        )  # fmt: skip
    directory = KeyDirectory(cells, engines, ttl=settings.http_key_cache_seconds, timeout=5)
    log.info("http.cells", cells=list(cells.names))
    return CellRouter(cells, apps, brokers, budgets, directory)


def cells_app_from_env() -> CellRouter:
    """uvicorn's factory for each `hbw serve` process when HBW_CELLS is set."""
    from worker.logs import configure_logging
    from worker.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_cells_app(settings)
