"""WakaTime-compatible HTTP (`hbw serve`), so editor plugins send heartbeats here directly.

A plugin's ``api_url`` pointed at ``http://HOST:PORT/api/v1`` makes wakatime-cli post to:

* ``POST /api/v1/users/current/heartbeats``: one heartbeat; ``201 {"data": {...}}``, or ``400
  {"error": ...}`` when it is invalid;
* ``POST /api/v1/users/current/heartbeats.bulk``: an array; ``201 {"responses": [[{"data": ...},
  201], [{"error": ...}, 400], ...]}``, one pair per item in order, invalid items ``400``.

The user is the owner of the API key (HTTP Basic with the key, as wakatime-cli sends it, a Bearer
token, or ``?api_key=``); a ``user_id`` in the body is ignored. A heartbeat without ``user_agent``
takes the ``User-Agent`` header, one without ``machine`` the ``X-Machine-Name`` header; a user
without a time zone takes the ``Timezone`` header's (worker.http.zones).

A request is answered ``201`` only after its heartbeats are on the queue, in one message with those
of the requests that arrived with it (group commit, worker.http.groups). When Redis cannot take
them the answer is ``503`` (with Retry-After), which wakatime-cli keeps in its offline queue and
sends again later; if a large request was partly enqueued, the resend is deduplicated downstream.
Errors are WakaTime's shape, ``{"error": "..."}``: ``401`` bad or missing key (nothing enqueued),
``413`` body too large, ``400`` malformed JSON or too many heartbeats (a client must not resend
those unchanged, and wakatime-cli does not), ``429`` over the per-key rate limit or after too many
failed authentications from the client's address (Retry-After; worker.http.ratelimit). Limits on the
connection itself (header size, read deadlines) are worker.http.limits'.

The same keys read the user's data through WakaTime's read API (worker.http.reads) and the
projects API (worker.http.projects_api); an unknown route or method is a JSON 404 or 405 too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import dramatiq
import redis
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from db.engine import create_engine
from db.errors import describe_error
from jobs.heartbeat import validate_heartbeats
from worker.http.auth import Authenticator, KeyCache, Unauthorized
from worker.http.day_reads import day_routes
from worker.http.groups import IngestGroups, Unavailable
from worker.http.metrics import RequestMetrics
from worker.http.openapi import document
from worker.http.projects_api import projects_routes
from worker.http.ratelimit import Budgets, RateLimited
from worker.http.reads import Reader, read_routes
from worker.http.responses import HttpError, json_response, parse_json, unavailable, unencodable
from worker.http.stats import stats_routes
from worker.http.summaries import summary_routes
from worker.http.zones import ZoneAdopter
from worker.logs import get_logger
from worker.runtime.outbox import recompute_sender
from worker.settings import Settings

log = get_logger("hbw.http")


# -- the app ----------------------------------------------------------------------------------


def create_app(
    settings: Settings, *, broker: dramatiq.Broker | None = None, engine: sa.Engine | None = None
) -> Starlette:
    """The ingest app. Without `broker` / `engine` it builds them from `settings`; reads have a
    pool of their own (worker.http.reads.Reader)."""
    if broker is None:
        from worker.runtime.broker import setup_broker

        broker = setup_broker(settings)
    if engine is None:
        from worker.database import get_engine

        engine = get_engine(settings.database_url, pool_size=5)  # keys, writes
    # 15 (30 in bursts): with the 10 above, as many as the 40 threads that run reads and lookups
    read_engine = create_engine(
        settings.database_read_url or settings.database_url, pool_size=15, pre_ping=False,
        application_name="hbw-reads",
    )  # fmt: skip
    budgets = Budgets(
        broker.client,
        broker.namespace,
        per_key_per_minute=settings.http_rate_limit_per_minute,
        auth_failures_per_minute=settings.http_auth_failures_per_minute,
    )

    authenticator = Authenticator(KeyCache(engine, settings.http_key_cache_seconds), budgets)
    send = recompute_sender(engine, broker, keys_per_message=settings.recompute_keys_per_message)
    zones = ZoneAdopter(engine, send)
    groups = IngestGroups(
        broker, budgets, batch_size=settings.batch_size, window_ms=settings.http_group_window_ms
    )

    async def read_json(request: Request) -> Any:
        limit = settings.http_max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(413, f"request body larger than {limit} bytes")
        return parse_json(body)

    def with_headers(request: Request, user_id: str, items: list[Any]) -> list[Any]:
        agent = request.headers.get("user-agent")
        machine = request.headers.get("x-machine-name")
        out = []
        for item in items:
            if isinstance(item, dict):
                item = {**item, "user_id": user_id}
                if agent and not item.get("user_agent"):
                    item["user_agent"] = agent
                if machine and not item.get("machine"):
                    item["machine"] = machine
            out.append(item)
        return out

    async def ingest(
        request: Request, items: list[Any], user: tuple[str, bytes, str], *, lenient: bool
    ) -> list[tuple]:
        """Validate `items` and queue the valid ones with the other requests of their group
        (worker.http.groups); one (body, status) per item. Raises 503 when Redis cannot take them.
        `lenient`: the body was decoded by the standard library, so items may hold what the queue's
        JSON cannot carry; those are rejected alone."""
        user_id, key_hash, address = user
        await zones.adopt(user_id, request.headers.get("timezone"))
        items = with_headers(request, user_id, items)
        reasons = {i: why for i, item in enumerate(items) if (why := unencodable(item))} if lenient else {}
        positions = [i for i in range(len(items)) if i not in reasons]
        validated = validate_heartbeats([items[i] for i in positions])
        reasons.update((positions[r.index], r.reason) for r in validated.rejected)
        try:
            batch_id = await groups.submit(key_hash, address, validated.accepted)
        except Unavailable:
            raise unavailable() from None
        log.info(
            "http.heartbeats",
            user_id=user_id,
            accepted=len(validated.accepted),
            rejected=len(reasons),
            batch_id=batch_id,
        )
        responses = []
        for index, item in enumerate(items):
            if index in reasons:
                responses.append(({"error": reasons[index]}, 400))
            else:
                responses.append(({"data": {k: v for k, v in item.items() if k != "user_id"}}, 201))
        return responses

    async def heartbeat(request: Request) -> Response:
        user = await authenticator.authenticate(request)
        body, lenient = await read_json(request)
        if not isinstance(body, dict):
            raise HttpError(400, "expected one heartbeat (a JSON object); send arrays to heartbeats.bulk")
        [(answer, status)] = await ingest(request, [body], user, lenient=lenient)
        return json_response(answer, status)

    async def heartbeats_bulk(request: Request) -> Response:
        user = await authenticator.authenticate(request)
        body, lenient = await read_json(request)
        if isinstance(body, dict):  # some clients post a lone heartbeat here
            body = [body]
        if not isinstance(body, list):
            raise HttpError(400, "expected a JSON array of heartbeats")
        if len(body) > settings.http_max_heartbeats:
            raise HttpError(
                400, f"too many heartbeats: {len(body)} > {settings.http_max_heartbeats} per request"
            )
        responses = await ingest(request, body, user, lenient=lenient)
        return json_response({"responses": [[answer, status] for answer, status in responses]}, 201)

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"ok": True}, 200)

    async def readyz(request: Request) -> Response:
        """Readiness: Redis takes writes (without them nothing can be queued or acknowledged). The
        answer names the condition only; the details go to the log."""
        from worker.runtime.redis_memory import check_writes

        try:
            memory = await run_in_threadpool(check_writes, broker.client, broker.namespace)
        except redis.RedisError as e:
            log.warning("http.not_ready", error=describe_error(e))
            return json_response({"ok": False, "error": "redis unavailable"}, 503)
        if not memory.writable:
            log.warning("http.not_ready", error=memory.problem)
            error = "redis out of memory" if memory.out_of_memory else "redis refuses writes"
            return json_response({"ok": False, "error": error}, 503)
        return json_response({"ok": True}, 200)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, Unauthorized):
            exc = HttpError(401, str(exc))
        elif isinstance(exc, RateLimited):
            exc = HttpError(429, exc.message, {"Retry-After": str(exc.retry_after)})
        elif isinstance(exc, redis.RedisError):  # a budget could not be checked
            log.warning("http.unavailable", error=f"{type(exc).__name__}: {exc}")
            exc = unavailable()
        elif isinstance(exc, sa.exc.DBAPIError):  # a key could not be looked up
            log.warning("http.keys_unavailable", error=str(exc).splitlines()[0])
            exc = unavailable()
        assert isinstance(exc, HttpError)
        if exc.status >= 500 or exc.status == 429:
            log.warning(
                "http.refused",
                status=exc.status,
                error=exc.message,
                path=request.url.path,
                client=request.client and request.client.host,
            )
        return json_response({"error": exc.message}, exc.status, exc.headers)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        """The client went away before its body arrived: nothing was enqueued, nothing to answer."""
        log.info("http.client_disconnected", path=request.url.path)
        return Response(status_code=400)

    async def on_unrouted(request: Request, exc: Exception) -> Response:
        """No such route (404) or method (405): WakaTime's JSON error, never plain text."""
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code, exc.headers)

    reader = Reader(engine, read_engine, authenticator, budgets, send)
    routes = [
        Route("/api/v1/users/current/heartbeats", heartbeat, methods=["POST"]),
        Route("/api/v1/users/current/heartbeats.bulk", heartbeats_bulk, methods=["POST"]),
        *read_routes(reader),
        *summary_routes(reader),
        *day_routes(reader, timeout_us=settings.timeout_us),
        *stats_routes(reader, timeout_minutes=round(settings.timeout_seconds / 60)),
        *projects_routes(reader),
        Route("/openapi.json", lambda request: json_response(document(), 200), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    errors = (HttpError, Unauthorized, RateLimited, redis.RedisError, sa.exc.DBAPIError)
    handlers = {error: on_http_error for error in errors}
    handlers |= {ClientDisconnect: on_disconnect, HTTPException: on_unrouted}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        read_engine.dispose()

    middleware = [Middleware(RequestMetrics)]  # answers by route and status (worker.http.metrics)
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan)


def app_from_env() -> Starlette:
    """uvicorn's factory for each `hbw serve` process: settings from the environment."""
    from worker.logs import configure_logging
    from worker.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
