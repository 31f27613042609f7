"""Answers in WakaTime's shapes: JSON bodies, and every error as ``{"error": "..."}`` with its
status (clients act on the status; WakaTime and its clients never send or expect plain text)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

RETRY_AFTER_UNAVAILABLE = 10


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def unavailable() -> HttpError:
    retry = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
    return HttpError(503, "the queue is unavailable; retry later", retry)


async def json_object(request: Request) -> dict[str, Any]:
    """A small JSON object body (a PATCH): 413 past 64 KiB, 400 when it is not one."""
    body = await request.body()
    if len(body) > 64 * 1024:
        raise HttpError(413, "request body larger than 65536 bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "expected a JSON object")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> tuple[Any, bool]:
    """The decoded body, and whether the standard library had to decode it.

    JSON allows lone UTF-16 surrogate escapes ("\\ud800"), which orjson refuses for the whole
    body; the standard library decodes them, so ingest can reject the item holding one alone.
    """
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError as e:
        error = e
    try:
        return json.loads(body, parse_constant=_no_constant), True
    except (ValueError, RecursionError):
        raise HttpError(400, f"malformed JSON: {error}") from None


def unencodable(item: Any) -> str | None:
    """Why the queue's JSON cannot carry `item` (a lone surrogate, an integer over 64 bits)."""
    try:
        orjson.dumps(item)
    except orjson.JSONEncodeError as e:
        return f"cannot be encoded as JSON: {e}"
    return None
