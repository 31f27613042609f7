"""The OpenAPI document of `hbw serve` (``GET /openapi.json``): every route, its parameters and
the shape of its answers. tests/unit/test_openapi.py checks it is valid OpenAPI 3.1 and names
exactly the routes the app serves."""

from __future__ import annotations

from functools import cache
from typing import Any

from worker.http.summaries import BREAKDOWNS

V1 = "/api/v1/users/{user}"
COMPAT = "/api/compat/wakatime/v1/users/{user}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _list_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


STR, NUM, INT, BOOL = ({"type": t} for t in ("string", "number", "integer", "boolean"))
OPT_STR = {"type": ["string", "null"]}
DURATION = _obj(total_seconds=NUM, text=STR, digital=STR, decimal=STR, hours=INT, minutes=INT)
ITEM = {"allOf": [_ref("Duration"), _obj(name=STR, percent=NUM, seconds=INT)]}
DAY = _obj(
    grand_total=_ref("Duration"),
    **{kind: _list_of(_ref("Item")) for kind in BREAKDOWNS},
    range=_obj(date=STR, start=STR, end=STR, text=STR, timezone=STR),
)
PROJECT = _obj(
    name=STR,
    display_name=OPT_STR,
    color=STR,
    description=OPT_STR,
    is_archived=BOOL,
    aliases=_list_of(STR),
    total_seconds=NUM,
    heartbeat_count=INT,
    first_heartbeat_at=STR,
    last_heartbeat_at=STR,
    created_at=STR,
    modified_at=STR,
)
SCHEMAS = {
    "Error": _obj(error=STR),
    "Duration": DURATION,
    "Item": ITEM,
    "Day": DAY,
    "Project": PROJECT,
    "Heartbeat": _obj(entity=STR, type=STR, time=NUM, project=OPT_STR, language=OPT_STR, category=STR),
}


def _param(name: str, where: str = "query", *, required: bool = False, schema=STR) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


USER = _param("user", "path", required=True)


def _op(summary: str, answer: dict[str, Any], *, params=(), body=None, status: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            status: {"description": "OK", "content": {"application/json": {"schema": answer}}},
            "default": {
                "description": "An error",
                "content": {"application/json": {"schema": _ref("Error")}},
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _data(schema: dict[str, Any], **more: Any) -> dict[str, Any]:
    return _obj(data=schema, **more)


def _wakatime_reads() -> dict[str, dict[str, Any]]:
    """The read routes under /api/v1/users/{user}, as paths relative to that."""
    day = _param("date", required=True)
    return {
        "": {
            "get": _op(
                "The user (timezone, last heartbeat, is_up_to_date)", _data({"type": "object"}), params=[USER]
            ),
            "patch": _op(
                "Set the user's time zone (202 while their history is recomputed)",
                _data({"type": "object"}),
                params=[USER],
                body=_obj(timezone=STR),
            ),
        },
        "/projects": {
            "get": _op("Projects", _data(_list_of({"type": "object"})), params=[USER, _param("q")])
        },
        "/user_agents": {"get": _op("User agents", _data(_list_of({"type": "object"})), params=[USER])},
        "/machine_names": {"get": _op("Machines", _data(_list_of({"type": "object"})), params=[USER])},
        "/goals": {"get": _op("Goals (none)", _data(_list_of({"type": "object"})), params=[USER])},
        "/file_experts": {
            "post": _op(
                "File experts (none)",
                _data(_list_of({"type": "object"})),
                params=[USER],
                body={"type": "object"},
            )
        },
        "/plugins/errors": {
            "post": _op(
                "A plugin's error, logged",
                _data({"type": "object"}),
                params=[USER],
                body={"type": "object"},
                status="201",
            )
        },
        "/statusbar/today": {"get": _op("Today on the user's calendar", _data(_ref("Day")), params=[USER])},
        "/status_bar/today": {
            "get": _op("Today (WakaTime's other spelling)", _data(_ref("Day")), params=[USER])
        },
        "/summaries": {
            "get": _op(
                "Each day of a range",
                _data(
                    _list_of(_ref("Day")),
                    cumulative_total={"type": "object"},
                    daily_average={"type": "object"},
                    start=STR,
                    end=STR,
                ),
                params=[
                    USER,
                    *(_param(n) for n in ("start", "end", "range", "project", "timezone", "branches")),
                ],
            )
        },
        "/stats": {"get": _op("The last 7 days summed", _data({"type": "object"}), params=[USER])},
        "/stats/{range}": {
            "get": _op(
                "A range summed",
                _data({"type": "object"}),
                params=[USER, _param("range", "path", required=True)],
            )
        },
        "/all_time_since_today": {
            "get": _op("Everything up to now", _data({"type": "object"}), params=[USER, _param("project")])
        },
        "/heartbeats": {
            "get": _op("A day's raw heartbeats", _data(_list_of(_ref("Heartbeat"))), params=[USER, day])
        },
        "/durations": {
            "get": _op(
                "A day's durations",
                _data(_list_of({"type": "object"})),
                params=[USER, day, _param("slice_by"), _param("project")],
            )
        },
    }


def _own_routes() -> dict[str, dict[str, Any]]:
    heartbeat = {"type": "object", "required": ["entity", "time"]}
    name = _param("name", "path", required=True)
    page = [_param(n) for n in ("page", "limit", "search", "language", "include_archived", "sort")]
    change = _obj(
        display_name=OPT_STR, color=STR, description=OPT_STR, is_archived=BOOL, aliases=_list_of(STR)
    )
    return {
        "/api/v1/users/current/heartbeats": {
            "post": _op("Send one heartbeat", _data(heartbeat), body=heartbeat, status="201")
        },
        "/api/v1/users/current/heartbeats.bulk": {
            "post": _op(
                "Send heartbeats", _obj(responses={"type": "array"}), body=_list_of(heartbeat), status="201"
            )
        },
        "/api/v2/projects": {
            "get": _op(
                "A page of projects",
                _data(_list_of(_ref("Project")), total=INT, total_pages=INT),
                params=page,
            )
        },
        "/api/v2/projects/{name}": {
            "get": _op("One project with its languages", _data(_ref("Project")), params=[name]),
            "patch": _op(
                "Change a project's metadata and aliases", _data(_ref("Project")), params=[name], body=change
            ),
        },
        "/api/v2/languages": {
            "get": _op("Time per language", _data(_list_of({"type": "object"}), total=INT))
        },
        "/api/v2/editors": {"get": _op("Time per editor", _data(_list_of({"type": "object"}), total=INT))},
        "/healthz": {"get": _op("The process answers", _obj(ok=BOOL))},
        "/readyz": {"get": _op("Redis takes writes", _obj(ok=BOOL))},
        "/openapi.json": {"get": _op("This document", {"type": "object"})},
    }


@cache
def document() -> dict[str, Any]:
    paths = _own_routes()
    for prefix in (V1, COMPAT):
        for path, operations in _wakatime_reads().items():
            paths[prefix + path] = operations
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "heartbeat-worker (hbw serve)",
            "version": "1",
            "description": "WakaTime-compatible heartbeats and reads, and the projects API. Every route but "
            "/healthz, /readyz and /openapi.json takes an API key (HTTP Basic with the key, Bearer, or "
            '?api_key=); {user} is `current` or the key\'s own user. Errors are {"error": "..."}.',
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
