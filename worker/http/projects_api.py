"""The projects API of `hbw serve`, under ``/api/v2`` (the key's own user, as everywhere):

* ``GET /api/v2/projects?page&limit&search&language&include_archived&sort``: a page of projects
  (``limit`` 1-100, default 20; ``sort`` ``total_seconds`` (default, most first), ``name``,
  ``last_heartbeat_at`` (latest first) or ``first_heartbeat_at``; archived ones only with
  ``include_archived=true``), with ``total``, ``total_pages``, ``page`` and ``limit``;
* ``GET /api/v2/projects/{name}``: one project with its languages and aliases (an alias names the
  project it counts towards);
* ``PATCH /api/v2/projects/{name}`` with any of ``display_name``, ``color``, ``description``,
  ``is_archived`` and ``aliases`` (the complete list), in one transaction through the code behind
  `hbw project set` and `hbw alias`: 400 for a bad value, 404 for no such project, 409 for an
  alias refused (it would chain or make a cycle), with the reason;
* ``GET /api/v2/languages``: time, heartbeats and number of projects per language;
* ``GET /api/v2/editors``: time, heartbeats, projects and user agents per editor (named as WakaTime
  does).
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import reads as db_reads
from jobs.projects import AliasRefused, ProjectError, UnknownProject, set_aliases, set_project_metadata
from worker.http.reads import Reader, iso
from worker.http.responses import HttpError, json_object, json_response
from worker.http.summaries import display

SORTS = ("total_seconds", "name", "last_heartbeat_at", "first_heartbeat_at")
FIELDS = ("display_name", "color", "description", "is_archived")
MAX_LIMIT = 100


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise HttpError(400, f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise HttpError(400, f"{name} must be true or false")
    return text in ("true", "1")


def project_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "display_name": row["display_name"],
        "color": row["color"],
        "description": row["description"],
        "is_archived": row["is_archived"],
        "aliases": list(row["aliases"]),
        "total_seconds": row["total_seconds"],
        "heartbeat_count": row["heartbeat_count"],
        "first_heartbeat_at": iso(row["first_heartbeat_at"]),
        "last_heartbeat_at": iso(row["last_heartbeat_at"]),
        "created_at": iso(row["created_at"]),
        "modified_at": iso(row["updated_at"]),
    }


def projects_routes(reader: Reader) -> list[Route]:
    async def list_projects(request: Request) -> Response:
        user_id = await reader.user(request)
        sort = request.query_params.get("sort") or "total_seconds"
        if sort not in SORTS:
            raise HttpError(400, f"sort must be one of {', '.join(SORTS)}")
        page = _int(request, "page", 1, 1, 1_000_000)
        limit = _int(request, "limit", 20, 1, MAX_LIMIT)
        search = request.query_params.get("search") or None
        language = request.query_params.get("language") or None
        archived = _flag(request, "include_archived")
        rows, total = await reader.read(
            lambda conn: db_reads.select_projects_page(
                conn,
                user_id,
                search=search,
                language=language,
                include_archived=archived,
                sort=sort,
                limit=limit,
                offset=(page - 1) * limit,
            )
        )
        body = {
            "data": [project_json(row) for row in rows],
            "total": total,
            "total_pages": math.ceil(total / limit),
            "page": page,
            "limit": limit,
        }
        return json_response(body, 200)

    def one(conn, user_id: str, name: str) -> dict[str, Any]:
        row = db_reads.select_project(conn, user_id, name)
        if row is None:
            raise UnknownProject(f"no project {name!r} (projects appear with their heartbeats)")
        languages = db_reads.select_project_languages(conn, user_id, row["name"])
        total = sum(language["total_seconds"] for language in languages) or 1.0
        return {
            **project_json(row),
            "languages": [
                {
                    "name": language["name"],
                    "total_seconds": language["total_seconds"],
                    "percent": round(100 * language["total_seconds"] / total, 2),
                    "heartbeat_count": language["heartbeat_count"],
                    "first_seen_at": iso(language["first_seen_at"]),
                    "last_seen_at": iso(language["last_seen_at"]),
                }
                for language in languages
            ],
        }

    async def get_project(request: Request) -> Response:
        user_id = await reader.user(request)
        name = request.path_params["name"]
        try:
            return json_response({"data": await reader.read(lambda conn: one(conn, user_id, name))}, 200)
        except UnknownProject as e:
            raise HttpError(404, str(e)) from None

    async def patch_project(request: Request) -> Response:
        user_id = await reader.user(request)
        name = request.path_params["name"]
        body = await json_object(request)
        unknown = sorted(set(body) - {*FIELDS, "aliases"})
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(unknown)}")

        def change(conn) -> dict[str, Any]:
            project = one(conn, user_id, name)["name"]  # (an alias names its project)
            fields = {field: body[field] for field in FIELDS if field in body}
            if fields:
                set_project_metadata(conn, user_id, project, **fields)
            if "aliases" in body:
                set_aliases(conn, user_id, project, body["aliases"])
            return one(conn, user_id, project)

        try:
            return json_response({"data": await reader.write(change)}, 200)
        except UnknownProject as e:
            raise HttpError(404, str(e)) from None
        except AliasRefused as e:
            raise HttpError(409, str(e)) from None
        except ProjectError as e:
            raise HttpError(400, str(e)) from None

    async def languages(request: Request) -> Response:
        user_id = await reader.user(request)
        rows = await reader.read(lambda conn: db_reads.select_languages(conn, user_id))
        for row in rows:
            row["first_seen_at"], row["last_seen_at"] = iso(row["first_seen_at"]), iso(row["last_seen_at"])
        return json_response({"data": rows, "total": len(rows)}, 200)

    async def editors(request: Request) -> Response:
        """Time, heartbeats, projects and user agents per editor ("Unknown": not recognised)."""
        user_id = await reader.user(request)
        rows = await reader.read(lambda conn: db_reads.select_editors(conn, user_id))
        for row in rows:
            row["name"] = display("editors", row["name"])
            row["first_seen_at"], row["last_seen_at"] = iso(row["first_seen_at"]), iso(row["last_seen_at"])
        return json_response({"data": rows, "total": len(rows)}, 200)

    return [
        Route("/api/v2/projects", list_projects, methods=["GET"]),
        Route("/api/v2/projects/{name:path}", get_project, methods=["GET"]),
        Route("/api/v2/projects/{name:path}", patch_project, methods=["PATCH"]),
        Route("/api/v2/languages", languages, methods=["GET"]),
        Route("/api/v2/editors", editors, methods=["GET"]),
    ]
