"""WakaTime-compatible HTTP ingest (`hbw serve`), so editor plugins send heartbeats here directly.

A plugin's ``api_url`` pointed at ``http://HOST:PORT/api/v1`` makes wakatime-cli post to:

* ``POST /api/v1/users/current/heartbeats``: one heartbeat; ``201 {"data": {...}}``, or ``400
  {"error": ...}`` when it is invalid;
* ``POST /api/v1/users/current/heartbeats.bulk``: an array; ``201 {"responses": [[{"data": ...},
  201], [{"error": ...}, 400], ...]}``, one pair per item in order, invalid items ``400``.

The user is the owner of the API key (HTTP Basic with the key, as wakatime-cli sends it, a Bearer
token, or ``?api_key=``); a ``user_id`` in the body is ignored. A heartbeat without ``user_agent``
takes the ``User-Agent`` header, one without ``machine`` the ``X-Machine-Name`` header.

A request is answered ``201`` only after its heartbeats are on the queue. When Redis cannot take
them the answer is ``503`` (with Retry-After), which wakatime-cli keeps in its offline queue and
sends again later; if a large request was partly enqueued, the resend is deduplicated downstream.
Errors are WakaTime's shape, ``{"error": "..."}``: ``401`` bad or missing key (nothing enqueued),
``413`` body too large, ``400`` malformed JSON or too many heartbeats (a client must not resend
those unchanged, and wakatime-cli does not), ``429`` over the per-key rate limit (Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import dramatiq
import orjson
import redis
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db.keys import select_key_user
from jobs.keys import hash_key, normalize_key
from worker.logs import get_logger
from worker.producer import EnqueueError, enqueue_heartbeats
from worker.settings import Settings

log = get_logger("hbw.http")

RETRY_AFTER_UNAVAILABLE = 10


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


# -- authentication ---------------------------------------------------------------------------


def key_from_request(request: Request) -> str:
    """The API key as WakaTime clients send it; raises 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(401, "malformed Authorization header") from None
        # wakatime-cli encodes the bare key; `curl -u KEY:` sends "KEY:"
        user, _, password = decoded.partition(":")
        return user or password
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    if key := request.query_params.get("api_key"):
        return key
    raise HttpError(401, "missing API key (HTTP Basic with the key, or ?api_key=)")


class KeyCache:
    """Key hash -> user (or None for unknown keys), kept `ttl` seconds, so a busy plugin does not
    cost a database lookup per request. A revoked key stops working within `ttl`."""

    MAX_ENTRIES = 100_000

    def __init__(self, engine: sa.Engine, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._entries: dict[bytes, tuple[str | None, float]] = {}

    MISS = object()

    def cached(self, key_hash: bytes) -> str | object | None:
        """The cached answer, or MISS (no database work: safe on the event loop)."""
        entry = self._entries.get(key_hash)
        return entry[0] if entry and entry[1] > time.monotonic() else self.MISS

    def user_for(self, key_hash: bytes) -> str | None:
        now = time.monotonic()
        with self.engine.connect() as conn:
            user_id = select_key_user(conn, key_hash)
        if self.ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = (user_id, now + self.ttl)
        return user_id


class RateLimiter:
    """At most `per_minute` requests per key in each clock minute, counted in Redis so every
    `hbw serve` process shares the budget (a fixed window: simple, and bounded at 2x in a burst
    that straddles a minute)."""

    def __init__(self, client: redis.Redis, namespace: str, per_minute: int) -> None:
        self.client, self.namespace, self.per_minute = client, namespace, per_minute

    def check(self, key_hash: bytes) -> None:
        if not self.per_minute:
            return
        now = time.time()
        window = int(now // 60)
        name = f"{self.namespace}:hbw.rate:{key_hash[:8].hex()}:{window}"
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, 120)
        count, _ = pipe.execute()
        if count > self.per_minute:
            retry_after = max(1, int((window + 1) * 60 - now) + 1)
            raise HttpError(
                429,
                f"rate limit: more than {self.per_minute} requests per minute for this key",
                {"Retry-After": str(retry_after)},
            )


# -- the app ----------------------------------------------------------------------------------


def create_app(
    settings: Settings, *, broker: dramatiq.Broker | None = None, engine: sa.Engine | None = None
) -> Starlette:
    """The ingest app. Without `broker` / `engine` it builds them from `settings`."""
    if broker is None:
        from worker.broker import setup_broker

        broker = setup_broker(settings)
    if engine is None:
        from worker.database import get_engine

        engine = get_engine(settings.database_url)
    keys = KeyCache(engine, settings.http_key_cache_seconds)
    limiter = RateLimiter(broker.client, broker.namespace, settings.http_rate_limit_per_minute)

    async def authenticate(request: Request) -> tuple[str, bytes]:
        normalized = normalize_key(key_from_request(request))
        if normalized is None:
            raise HttpError(401, "invalid API key: expected a UUID v4, optionally prefixed waka_")
        key_hash = hash_key(normalized)
        user_id = keys.cached(key_hash)
        if user_id is KeyCache.MISS:
            user_id = await run_in_threadpool(keys.user_for, key_hash)
        if user_id is None:
            raise HttpError(401, "unknown or revoked API key")
        return user_id, key_hash

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
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise HttpError(400, f"malformed JSON: {e}") from None

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

    async def ingest(request: Request, items: list[Any], user_id: str, key_hash: bytes) -> list[tuple]:
        """Enqueue `items`; one (body, status) per item. Raises 503 when Redis cannot take them."""
        items = with_headers(request, user_id, items)

        def check_and_enqueue():
            limiter.check(key_hash)
            return enqueue_heartbeats(items, batch_size=settings.batch_size, broker=broker)

        try:
            result = await run_in_threadpool(check_and_enqueue)
        except (EnqueueError, redis.RedisError) as e:
            log.warning("http.unavailable", error=str(e))
            raise HttpError(
                503, "the queue is unavailable; retry later",
                {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
            ) from None  # fmt: skip
        reasons = {r.index: r.reason for r in result.rejected}
        log.info("http.heartbeats", user_id=user_id, accepted=result.accepted, rejected=len(reasons),
                 batch_id=result.batch_id)  # fmt: skip
        responses = []
        for index, item in enumerate(items):
            if index in reasons:
                responses.append(({"error": reasons[index]}, 400))
            else:
                responses.append(({"data": {k: v for k, v in item.items() if k != "user_id"}}, 201))
        return responses

    async def heartbeat(request: Request) -> Response:
        user_id, key_hash = await authenticate(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HttpError(400, "expected one heartbeat (a JSON object); send arrays to heartbeats.bulk")
        [(answer, status)] = await ingest(request, [body], user_id, key_hash)
        return json_response(answer, status)

    async def heartbeats_bulk(request: Request) -> Response:
        user_id, key_hash = await authenticate(request)
        body = await read_json(request)
        if isinstance(body, dict):  # some clients post a lone heartbeat here
            body = [body]
        if not isinstance(body, list):
            raise HttpError(400, "expected a JSON array of heartbeats")
        if len(body) > settings.http_max_heartbeats:
            raise HttpError(
                400, f"too many heartbeats: {len(body)} > {settings.http_max_heartbeats} per request"
            )
        responses = await ingest(request, body, user_id, key_hash)
        return json_response({"responses": [[answer, status] for answer, status in responses]}, 201)

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"ok": True}, 200)

    async def readyz(request: Request) -> Response:
        """Readiness: Redis takes writes (without them nothing can be queued or acknowledged). The
        answer names the condition only; the details go to the log."""
        from worker.redis_memory import check_writes

        try:
            memory = await run_in_threadpool(check_writes, broker.client, broker.namespace)
        except redis.RedisError as e:
            log.warning("http.not_ready", error=f"{type(e).__name__}: {e}")
            return json_response({"ok": False, "error": "redis unavailable"}, 503)
        if not memory.writable:
            log.warning("http.not_ready", error=memory.problem)
            error = "redis out of memory" if memory.out_of_memory else "redis refuses writes"
            return json_response({"ok": False, "error": error}, 503)
        return json_response({"ok": True}, 200)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        if exc.status >= 500 or exc.status == 429:
            log.warning("http.refused", status=exc.status, error=exc.message, path=request.url.path)
        return json_response({"error": exc.message}, exc.status, exc.headers)

    routes = [
        Route("/api/v1/users/current/heartbeats", heartbeat, methods=["POST"]),
        Route("/api/v1/users/current/heartbeats.bulk", heartbeats_bulk, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HttpError: on_http_error})


def app_from_env() -> Starlette:
    """uvicorn's factory for each `hbw serve` process: settings from the environment."""
    from worker.logs import configure_logging
    from worker.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
