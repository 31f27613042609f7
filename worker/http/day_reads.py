"""One day of a user's raw heartbeats, as WakaTime serves it: ``heartbeats?date=`` (the
heartbeats) and ``durations?date=`` (runs of them). The day is the user's (their time zone).

A duration is a run of consecutive heartbeats with the same value of ``slice_by`` (``entity`` by
default; ``project``, ``language``, ``category``, ``machine``), each within the keystroke timeout
of the next; it lasts what its heartbeats are credited (docs/spec.md section 3, the rule the day
rows are made with), so a day's durations of a project add up to that project's time that day.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import reads as db_reads
from worker.http.ranges import parse_day
from worker.http.reads import PREFIXES, Reader, iso
from worker.http.responses import HttpError, json_response

SLICES = {
    "entity": "entity",
    "project": "project",
    "language": "language",
    "category": "category",
    "machine": "machine",
}


def epoch(at: dt.datetime) -> float:
    return at.timestamp()


def durations_of(heartbeats: list[dict[str, Any]], slice_by: str) -> list[dict[str, Any]]:
    """Runs of heartbeats with the same `slice_by` value, each gap within the timeout (credited)."""
    runs: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for beat in heartbeats:
        same = previous is not None and previous["credited_us"] > 0 and previous[slice_by] == beat[slice_by]
        if not same:
            runs.append(
                {
                    "time": epoch(beat["time"]),
                    "project": beat["project"],
                    slice_by: beat[slice_by],
                    "duration_us": 0,
                }
            )
        runs[-1]["duration_us"] += beat["credited_us"]
        previous = beat
    for run in runs:
        run["duration"] = run.pop("duration_us") / 1e6
    return runs


def heartbeat_json(beat: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": epoch(beat["time"]),
        **{
            k: beat[k]
            for k in (
                "entity",
                "type",
                "category",
                "project",
                "project_root_count",
                "branch",
                "language",
                "dependencies",
                "line_additions",
                "line_deletions",
                "lines",
                "lineno",
                "cursorpos",
                "is_write",
            )
        },
        "machine_name_id": beat["machine"],
        "user_agent_id": beat["user_agent"],
    }


def day_routes(reader: Reader, timeout_us: int) -> list[Route]:
    async def one_day(request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        user_id = await reader.user(request)
        text = request.query_params.get("date")
        if not text:
            raise HttpError(400, "date is required (YYYY-MM-DD)")

        def read(conn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            today = db_reads.select_local_today(conn, user_id)
            day = parse_day(text, today["day"], "date")
            [bounds] = db_reads.select_local_days(conn, user_id, day, day)
            return bounds, db_reads.select_day_heartbeats(conn, user_id, day, timeout_us)

        return await reader.read(read)

    def envelope(bounds: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, Any]:
        end = iso(bounds["ends"] - dt.timedelta(seconds=1))
        return {"data": data, "start": iso(bounds["starts"]), "end": end, "timezone": bounds["zone"]}

    async def heartbeats(request: Request) -> Response:
        bounds, beats = await one_day(request)
        return json_response(envelope(bounds, [heartbeat_json(beat) for beat in beats]), 200)

    async def durations(request: Request) -> Response:
        slice_by = request.query_params.get("slice_by") or "entity"
        if slice_by not in SLICES:
            raise HttpError(400, f"slice_by must be one of {', '.join(SLICES)}")
        bounds, beats = await one_day(request)
        project = request.query_params.get("project") or None
        runs = durations_of(beats, SLICES[slice_by])
        if project:
            runs = [run for run in runs if run["project"] == project]
        return json_response(envelope(bounds, runs), 200)

    return [
        Route(prefix + path, handler, methods=["GET"])
        for prefix in PREFIXES
        for path, handler in (
            ("/users/{user}/heartbeats", heartbeats),
            ("/users/{user}/durations", durations),
        )
    ]
