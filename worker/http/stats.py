"""WakaTime's stats: ``users/{user}/stats[/{range}]``, one range summed, and
``all_time_since_today`` (docs/wakatime-read-api.md).

Ranges, on the user's calendar: ``last_7_days`` (the default), ``last_30_days``, ``last_6_months``
and ``last_year`` end yesterday, as WakaTime's do; ``all_time`` runs from the first day with time
through today; ``YYYY`` and ``YYYY-MM`` are that year or month. Stats come from the day rows, so
they are always computed (``status`` "ok", ``percent_calculated`` 100); ``is_up_to_date`` is false
while a time zone change is being recomputed. ``total_seconds`` leaves out the "Other" language
(time on a project without a language), as WakaTime's does.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import reads as db_reads
from worker.http.ranges import day_text
from worker.http.reads import PREFIXES, Reader, iso
from worker.http.responses import HttpError, json_response
from worker.http.summaries import BREAKDOWNS, day_summary, duration

NAMES = {
    "last_7_days": "Last 7 Days",
    "last_30_days": "Last 30 Days",
    "last_6_months": "Last 6 Months",
    "last_year": "Last Year",
    "all_time": "All Time",
}
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
#: Stats are sums of day rows: always computed, never stuck, everything visible (to the key's user).
COMPUTED = {
    "status": "ok",
    "percent_calculated": 100,
    "is_already_updating": False,
    "is_stuck": False,
    **dict.fromkeys(
        (
            "is_coding_activity_visible",
            "is_language_usage_visible",
            "is_editor_usage_visible",
            "is_category_usage_visible",
            "is_os_usage_visible",
        ),
        True,
    ),
}


def text(seconds: float) -> str:
    return duration(seconds, item=False)["text"]


def stats_days(key: str, today: dt.date, first: dt.date | None) -> tuple[dt.date, dt.date, str]:
    """(first day, last day, human-readable name) of a stats range."""
    yesterday = today - dt.timedelta(days=1)
    back = {"last_7_days": 7, "last_30_days": 30, "last_6_months": 182, "last_year": 365}
    if key in back:
        return today - dt.timedelta(days=back[key]), yesterday, NAMES[key]
    if key == "all_time":
        return first or today, today, NAMES[key]
    if key.isdigit() and len(key) == 4:
        return dt.date(int(key), 1, 1), dt.date(int(key), 12, 31), key
    if match := MONTH.match(key):
        year, month = int(match[1]), int(match[2])
        if 1 <= month <= 12:
            start = dt.date(year, month, 1)
            end = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
            return start, end, f"{start:%B %Y}"
    raise HttpError(400, f"unknown range {key!r}: one of {', '.join(NAMES)}, YYYY or YYYY-MM")


def stats_routes(reader: Reader, timeout_minutes: int) -> list[Route]:
    async def stats(request: Request) -> Response:
        user_id = await reader.user(request)
        key = request.path_params.get("range", "last_7_days")

        def read(conn) -> dict[str, Any]:
            today = db_reads.select_local_today(conn, user_id)
            first = db_reads.select_first_day(conn, user_id) if key == "all_time" else None
            since, until, name = stats_days(key, today["day"], first)
            return {
                "today": today,
                "since": since,
                "until": until,
                "name": name,
                "rows": db_reads.select_range_breakdown(conn, user_id, since, until),
                "bounds": db_reads.select_range_bounds(conn, user_id, since, until),
                "user": db_reads.select_user_summary(conn, user_id),
            }

        got = await reader.read(read)
        today, until, user = got["today"], got["until"], got["user"]
        days = {row["name"]: row["coding_us"] / 1e6 for row in got["rows"] if row["kind"] == "days"}
        summary = day_summary([row for row in got["rows"] if row["kind"] != "days"])
        total = summary["grand_total"]["total_seconds"]
        other = sum(item["total_seconds"] for item in summary["languages"] if item["name"] == "Other")
        length, worked = (until - got["since"]).days + 1, sum(1 for s in days.values() if s > 0)
        average, average_all = (total - other) / max(worked, 1), total / max(worked, 1)
        best = max(days.items(), key=lambda pair: (pair[1], pair[0]), default=None)
        data = {
            "total_seconds": total - other,
            "total_seconds_including_other_language": total,
            "human_readable_total": text(total - other),
            "human_readable_total_including_other_language": text(total),
            "daily_average": average,
            "daily_average_including_other_language": average_all,
            "human_readable_daily_average": text(average),
            "human_readable_daily_average_including_other_language": text(average_all),
            **{kind: summary[kind] for kind in BREAKDOWNS},
            "best_day": {"date": best[0], "text": text(best[1]), "total_seconds": best[1]} if best else None,
            "range": key,
            "human_readable_range": got["name"],
            "holidays": length - worked,
            "days_including_holidays": length,
            "days_minus_holidays": worked,
            "start": iso(got["bounds"]["starts"]),
            "end": iso(got["bounds"]["ends"] - dt.timedelta(seconds=1)),
            "timezone": today["zone"],
            "timeout": timeout_minutes,
            "writes_only": False,
            "is_up_to_date": not user["recomputing"],
            "is_including_today": until >= today["day"],
            **COMPUTED,
            "user_id": user_id,
            "username": user_id,
            "created_at": iso(user["created_at"]),
            "modified_at": None,
        }
        return json_response({"data": data}, 200)

    async def all_time_since_today(request: Request) -> Response:
        """Everything up to now (or one project's, ?project=): 202 while a time zone change is
        being recomputed (WakaTime's clients retry), else 200."""
        user_id = await reader.user(request)
        project = request.query_params.get("project") or None

        def read(conn) -> dict[str, Any]:
            today = db_reads.select_local_today(conn, user_id)
            totals = db_reads.select_all_time(conn, user_id, project)
            first = totals["first_day"] or today["day"]
            bounds = db_reads.select_range_bounds(conn, user_id, first, today["day"])
            return {
                "today": today,
                "totals": totals,
                "first": first,
                "bounds": bounds,
                "user": db_reads.select_user_summary(conn, user_id),
            }

        got = await reader.read(read)
        totals, first, today = got["totals"], got["first"], got["today"]
        if project and not totals["days"] and totals["first_day"] is None:
            raise HttpError(404, f"no project {project!r}")
        seconds = totals["coding_us"] / 1e6
        up_to_date = not got["user"]["recomputing"]
        data = {
            **{k: v for k, v in duration(seconds, item=False).items() if k not in ("hours", "minutes")},
            "daily_average": seconds / max(totals["days"], 1),
            "is_up_to_date": up_to_date,
            "percent_calculated": 100 if up_to_date else 0,
            "timeout": timeout_minutes,
            "range": {
                "start": iso(got["bounds"]["starts"]),
                "start_date": str(first),
                "start_text": day_text(first),
                "end": iso(got["bounds"]["ends"] - dt.timedelta(seconds=1)),
                "end_date": str(today["day"]),
                "end_text": "Today",
                "timezone": today["zone"],
            },
            **({"project": project} if project else {}),
        }
        return json_response({"data": data}, 200 if up_to_date else 202)

    paths = ("/users/{user}/stats", "/users/{user}/stats/{range}")
    routes = [Route(prefix + path, stats, methods=["GET"]) for prefix in PREFIXES for path in paths]
    return routes + [
        Route(prefix + "/users/{user}/all_time_since_today", all_time_since_today, methods=["GET"])
        for prefix in PREFIXES
    ]
