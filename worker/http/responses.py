"""Answers in WakaTime's shapes: JSON bodies, and every error as ``{"error": "..."}`` with its
status (clients act on the status; WakaTime and its clients never send or expect plain text)."""

from __future__ import annotations

from typing import Any

import orjson
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
