"""WakaTime's read API on `hbw serve`, for the tools users already have (wakatime-cli, editor
plugins, API clients), from the derived tables (docs/wakatime-read-api.md has the shapes).

Every route exists under ``/api/v1/users/{user}/...`` and, as Wakapi offers it, under
``/api/compat/wakatime/v1/users/{user}/...``. ``{user}`` is ``current`` or the key's own user;
any other user is 403 (nobody reads another user's data). Keys, the per-key rate limit and the
failed-login limit are the ingest's; answers are JSON, errors ``{"error": "..."}``.

Served here: ``/users/current`` (and PATCH of its ``timezone``), ``projects`` (``?q=``),
``user_agents``, ``machine_names``, and quiet answers for what is not modelled, so plugins stay
quiet: ``goals`` (none), ``file_experts`` (none), ``plugins/errors`` (logged, 201). The status bar
and summaries are in worker.http.summaries, stats in worker.http.stats, a day's heartbeats and
durations in worker.http.day_reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import reads as db_reads
from db.queries import Key
from jobs.user_agents import parse_user_agent
from jobs.users import ZoneRefused, set_time_zone
from worker.http.auth import Authenticator
from worker.http.ratelimit import Budgets
from worker.http.responses import HttpError, json_object, json_response
from worker.logs import get_logger

log = get_logger("hbw.http")

PREFIXES = ("/api/v1", "/api/compat/wakatime/v1")
AGES = (("year", 31_536_000), ("month", 2_592_000), ("day", 86_400), ("hour", 3_600), ("minute", 60))


#: The rate budget a request has to pay before its query: paid on the thread that runs the query,
#: so a read crosses into a thread once (anyio copies the context there).
#: (A list, shared by the copies of the context, so a request that reads twice pays once.)
_BUDGET: ContextVar[list[tuple[bytes, str]]] = ContextVar("hbw_read_budget")


class Reader:
    """What every read does: the key's user (``{user}`` must be them); then, on a worker thread,
    its rate budget and the query.

    Reads run in autocommit on a pool of their own (on DATABASE_READ_URL when set: a replica)
    that does not ping a connection before each use: no BEGIN, ROLLBACK or ping (a status bar's
    two statements take 2 round trips instead of 5; reads write nothing, and under READ
    COMMITTED each statement had its own snapshot anyway). A read that fails on a lost
    connection (PostgreSQL restarted) runs once more on a fresh one."""

    def __init__(
        self,
        engine: sa.Engine,
        read_engine: sa.Engine,
        authenticator: Authenticator,
        budgets: Budgets,
        send: Callable[[Sequence[Key]], int],
    ) -> None:
        self.engine, self.authenticator, self.budgets = engine, authenticator, budgets
        self.read_engine = read_engine.execution_options(isolation_level="AUTOCOMMIT")
        #: Sends recompute messages for the user-days a change left stale (after its commit).
        self.send = send

    async def user(self, request: Request) -> str:
        user_id, key_hash, address = await self.authenticator.authenticate(request)
        named = request.path_params.get("user", "current")
        if named not in ("current", user_id):
            raise HttpError(403, "an API key reads its own user's data only (use users/current)")
        _BUDGET.set([(key_hash, address)])
        return user_id

    def _pay(self) -> None:
        if owed := _BUDGET.get([]):
            [refused] = self.budgets.check_many([owed.pop()])
            if refused is not None:
                raise refused

    async def pay(self) -> None:
        """The rate budget of a request that reads nothing."""
        await run_in_threadpool(self._pay)

    async def read(self, work: Callable[[sa.Connection], Any]) -> Any:
        """`work` in autocommit (it only reads), again on a fresh connection if it lost its own."""

        def run() -> Any:
            self._pay()
            try:
                with self.read_engine.connect() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise
                log.info("http.read_reconnected")
                with self.read_engine.connect() as conn:
                    return work(conn)

        return await run_in_threadpool(run)

    async def write(self, work: Callable[[sa.Connection], Any]) -> Any:
        """`work` in a transaction committed when it returns."""

        def run() -> Any:
            self._pay()
            with self.engine.begin() as conn:
                return work(conn)

        return await run_in_threadpool(run)


def iso(at: dt.datetime | None) -> str | None:
    """WakaTime's timestamps: ISO 8601 in UTC with a Z."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def ago(at: dt.datetime | None, now: dt.datetime) -> str | None:
    """How WakaTime's human_readable_*_at fields read: "3 hours ago"."""
    if at is None:
        return None
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in AGES:
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def user_json(user_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """WakaTime's user object, with what we know of the user (no e-mail, photo or profile)."""
    agent = parse_user_agent(summary["last_user_agent"]) if summary["last_user_agent"] else None
    known = {
        "id": user_id,
        "username": user_id,
        "display_name": user_id,
        "full_name": user_id,
        "timezone": summary["timezone"],
        "last_heartbeat_at": iso(summary["last_heartbeat_at"]),
        "last_project": summary["last_project"],
        "last_plugin": summary["last_user_agent"],
        "last_plugin_name": agent.editor if agent else None,
        "created_at": iso(summary["created_at"]),
        "is_up_to_date": not summary["recomputing"],
    }
    unknown = {"email": None, "photo": None, "is_email_public": False, "is_email_confirmed": False}
    return {**known, **unknown, "has_premium_features": False, "plan": "free", "modified_at": None}


def project_item(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """One project as /users/current/projects lists it (`id` is the name, as in Wakapi)."""
    first, last = row["first_heartbeat_at"], row["last_heartbeat_at"]
    return {
        "id": row["name"],
        "name": row["name"],
        "color": row["color"],
        "urlencoded_name": quote(row["name"], safe=""),
        "last_heartbeat_at": iso(last),
        "human_readable_last_heartbeat_at": ago(last, now),
        "first_heartbeat_at": iso(first),
        "human_readable_first_heartbeat_at": ago(first, now),
        "created_at": iso(row["created_at"]),
        "repository": None,
        "badge": None,
        "clients": [],
        "has_public_url": False,
        "url": None,
    }


def user_agent_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["user_agent"],
        "value": row["user_agent"],
        "editor": row["editor"],
        "version": row["editor_version"],
        "os": row["os"],
        "last_seen_at": iso(row["last_seen_at"]),
        "is_browser_extension": row["is_browser_extension"],
        "is_desktop_app": False,
        "created_at": iso(row["first_seen_at"]),
    }


def read_routes(reader: Reader) -> list[Route]:
    async def current_user(request: Request) -> Response:
        user_id = await reader.user(request)
        summary = await reader.read(lambda conn: db_reads.select_user_summary(conn, user_id))
        return json_response({"data": user_json(user_id, summary)}, 200)

    async def change_user(request: Request) -> Response:
        """{"timezone": "Europe/Paris"}: the user's days move to that calendar (202 while the
        workers recompute the history; 200 when nothing changed)."""
        user_id = await reader.user(request)
        body = await json_object(request)
        if set(body) != {"timezone"}:
            raise HttpError(400, "only the timezone can be changed")
        try:
            keys = await reader.write(lambda conn: set_time_zone(conn, user_id, body["timezone"]))
        except ZoneRefused as e:
            raise HttpError(400, str(e)) from None
        if keys:  # (if this fails, the sweeper sends them)
            await run_in_threadpool(reader.send, keys)
        summary = await reader.read(lambda conn: db_reads.select_user_summary(conn, user_id))
        return json_response({"data": user_json(user_id, summary)}, 202 if keys else 200)

    async def projects(request: Request) -> Response:
        user_id = await reader.user(request)
        search = request.query_params.get("q") or None
        page = dict(search=search, language=None, include_archived=True, sort="name", limit=10**4, offset=0)
        rows, _ = await reader.read(lambda conn: db_reads.select_projects_page(conn, user_id, **page))
        now = dt.datetime.now(dt.UTC)
        return json_response({"data": [project_item(row, now) for row in rows]}, 200)

    async def user_agents(request: Request) -> Response:
        user_id = await reader.user(request)
        rows = await reader.read(lambda conn: db_reads.select_user_agents(conn, user_id))
        return json_response({"data": [user_agent_item(row) for row in rows], "total_pages": 1}, 200)

    async def machine_names(request: Request) -> Response:
        user_id = await reader.user(request)
        rows = await reader.read(lambda conn: db_reads.select_machines(conn, user_id))
        data = [
            {
                "id": row["machine"],
                "name": row["machine"],
                "value": row["machine"],
                "ip": None,
                "timezone": None,
                "last_seen_at": iso(row["last_seen_at"]),
                "created_at": iso(row["first_seen_at"]),
            }
            for row in rows
        ]
        return json_response({"data": data, "total_pages": 1}, 200)

    async def goals(request: Request) -> Response:
        await reader.user(request)
        await reader.pay()
        return json_response({"data": [], "total": 0, "total_pages": 0}, 200)

    async def file_experts(request: Request) -> Response:
        await reader.user(request)
        await reader.pay()
        return json_response({"data": []}, 200)

    async def plugin_errors(request: Request) -> Response:
        """Plugins report their own errors here; logged (never their payload) and dropped."""
        user_id = await reader.user(request)
        await reader.pay()
        log.info("http.plugin_error", user_id=user_id, user_agent=request.headers.get("user-agent"))
        return json_response({"data": {}}, 201)

    endpoints = [
        ("/users/{user}", current_user, "GET"),
        ("/users/{user}", change_user, "PATCH"),
        ("/users/{user}/projects", projects, "GET"),
        ("/users/{user}/user_agents", user_agents, "GET"),
        ("/users/{user}/machine_names", machine_names, "GET"),
        ("/users/{user}/goals", goals, "GET"),
        ("/users/{user}/file_experts", file_experts, "POST"),
        ("/users/{user}/plugins/errors", plugin_errors, "POST"),
    ]
    return [
        Route(prefix + path, handler, methods=[method])
        for prefix in PREFIXES
        for path, handler, method in endpoints
    ]
