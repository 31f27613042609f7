"""WakaTime's time summaries, from the day rows: the status bar of today (``statusbar/today`` and
``status_bar/today``, as wakatime-cli ``--today`` and the editor plugins read it) and
``summaries`` of a range of days (worker.http.ranges). With ``?project=`` a summary is that
project's: its time, languages, editors and operating systems (categories and machines are not
kept per project, so they are empty). ``?timezone=`` other than the user's is refused: days are
kept on the user's calendar.

Shapes and formats are WakaTime's (docs/wakatime-read-api.md): ``text`` like "2 hrs 17 mins",
``digital`` "2:17" for a total and "2:17:36" for an item, ``decimal`` "2.28" (hours and minutes),
``hours``/``minutes``/``seconds`` JSON integers (wakatime-cli decodes them into Go ints: a float
fails its whole answer). The day is the user's (their time zone); the grand total and categories
count every heartbeat, with or without a project.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import reads as db_reads
from worker.http.ranges import day_text, requested_days
from worker.http.reads import PREFIXES, Reader, iso
from worker.http.responses import HttpError, json_response

#: How WakaTime names what our parser keeps lower-case (others are shown as parsed).
EDITORS = {
    "vscode": "VS Code",
    "vim": "Vim",
    "neovim": "Neovim",
    "emacs": "Emacs",
    "intellij": "IntelliJ IDEA",
    "pycharm": "PyCharm",
    "webstorm": "WebStorm",
    "goland": "GoLand",
    "phpstorm": "PhpStorm",
    "rider": "Rider",
    "clion": "CLion",
    "rubymine": "RubyMine",
    "datagrip": "DataGrip",
    "androidstudio": "Android Studio",
    "sublime_text": "Sublime Text",
    "xcode": "Xcode",
    "zed": "Zed",
    "cursor": "Cursor",
    "chrome": "Chrome",
    "firefox": "Firefox",
    "edge": "Edge",
    "safari": "Safari",
    "visualstudio": "Visual Studio",
    "jupyter": "Jupyter",
    "obsidian": "Obsidian",
    "terminal": "Terminal",
}
OPERATING_SYSTEMS = {"linux": "Linux", "macos": "Mac", "windows": "Windows", "wsl": "WSL"}
KINDS = ("categories", "projects", "languages", "editors", "operating_systems", "machines")
#: Every breakdown of a WakaTime summary (dependencies: not kept, always empty).
BREAKDOWNS = (*KINDS, "dependencies")


def human(hours: int, minutes: int, seconds: int) -> str:
    """WakaTime's text: "2 hrs 17 mins", "1 hr", "49 mins", "7 secs", "3,715 hrs 44 mins"."""

    def part(n: int, unit: str) -> str:
        return f"{n:,} {unit}{'' if n == 1 else 's'}"

    if not hours and not minutes:
        return part(seconds, "sec")
    return " ".join(part(n, unit) for n, unit in ((hours, "hr"), (minutes, "min")) if n)


def duration(seconds: float, *, item: bool) -> dict[str, Any]:
    """A total (``item`` False: H:MM) or a breakdown item's (H:MM:SS, and its seconds) numbers."""
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    out = {
        "total_seconds": seconds,
        "text": human(hours, minutes, secs),
        "digital": f"{hours}:{minutes:02d}:{secs:02d}" if item else f"{hours}:{minutes:02d}",
        "decimal": f"{(hours * 60 + minutes) / 60:.2f}",
        "hours": hours,
        "minutes": minutes,
    }
    return {**out, "seconds": secs} if item else out


def display(kind: str, name: str | None) -> str:
    if kind == "categories":
        return " ".join(word.upper() if word == "ai" else word.capitalize() for word in name.split())
    if kind == "editors":
        return EDITORS.get(name, name) if name else "Unknown"
    if kind == "operating_systems":
        return OPERATING_SYSTEMS.get(name, name) if name else "Unknown"
    if kind == "machines":
        return name or "Unknown"
    return name


def day_summary(rows: list[dict[str, Any]], *, total_of: str = "categories") -> dict[str, Any]:
    """One day's grand total (the sum of the `total_of` breakdown: categories count every
    heartbeat) and breakdowns, from select_day_breakdown rows of that day."""
    seconds: dict[str, dict[str, float]] = {kind: defaultdict(float) for kind in KINDS}
    for row in rows:
        seconds[row["kind"]][display(row["kind"], row["name"])] += row["coding_us"] / 1e6
    total = sum(seconds[total_of].values())
    summary: dict[str, Any] = {"grand_total": duration(total, item=False)}
    for kind in KINDS:
        items = sorted(seconds[kind].items(), key=lambda pair: (-pair[1], pair[0]))
        summary[kind] = [
            {"name": name, "percent": round(100 * s / total, 2) if total else 0.0, **duration(s, item=True)}
            for name, s in items
            if s > 0 or kind == "categories"
        ]
    for machine in summary["machines"]:
        machine["machine_name_id"] = machine["name"]
    summary["dependencies"] = []
    return summary


def summary_routes(reader: Reader) -> list[Route]:
    async def status_bar(request: Request) -> Response:
        """Today on the user's calendar, always 200 (wakatime-cli takes nothing else)."""
        user_id = await reader.user(request)

        def read(conn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            today = db_reads.select_local_today(conn, user_id)
            return today, db_reads.select_day_breakdown(conn, user_id, today["day"], today["day"])

        today, rows = await reader.read(read)
        data = day_summary(rows)
        data["range"] = {
            "date": today["day"].isoformat(),
            "start": iso(today["starts"]),
            "end": iso(today["ends"] - dt.timedelta(seconds=1)),
            "text": "Today",
            "timezone": today["zone"],
        }
        body = {"cached_at": iso(dt.datetime.now(dt.UTC)), "has_team_features": False, "data": data}
        return json_response(body, 200)

    async def summaries(request: Request) -> Response:
        """Each day of the range (end included, days without time too), and their sum and average."""
        user_id = await reader.user(request)
        params, project = request.query_params, request.query_params.get("project") or None

        def read(conn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            today = db_reads.select_local_today(conn, user_id)
            if params.get("timezone") and params["timezone"] != today["zone"]:
                zone = today["zone"]
                raise HttpError(400, f"days are kept in the user's time zone, {zone}: change it with PATCH")
            since, until = requested_days(params, today["day"])
            days = db_reads.select_local_days(conn, user_id, since, until)
            if project:
                return days, db_reads.select_project_day_breakdown(conn, user_id, project, since, until)
            return days, db_reads.select_day_breakdown(conn, user_id, since, until)

        days, rows = await reader.read(read)
        by_day = defaultdict(list)
        for row in rows:
            by_day[row["day"]].append(row)
        data = []
        for day in days:
            summary = day_summary(by_day[day["day"]], total_of="projects" if project else "categories")
            summary["range"] = {
                "date": day["day"].isoformat(),
                "start": iso(day["starts"]),
                "end": iso(day["ends"] - dt.timedelta(seconds=1)),
                "text": day_text(day["day"]),
                "timezone": day["zone"],
            }
            data.append(summary)
        total = sum(day["grand_total"]["total_seconds"] for day in data)
        worked = sum(1 for day in data if day["grand_total"]["total_seconds"] > 0)
        average = total / worked if worked else 0.0
        cumulative = duration(total, item=False)
        body = {
            "data": data,
            "cumulative_total": {
                "seconds": total,
                **{k: cumulative[k] for k in ("text", "decimal", "digital")},
            },
            "daily_average": {
                "holidays": len(data) - worked,
                "days_including_holidays": len(data),
                "days_minus_holidays": worked,
                "seconds": average,
                "text": duration(average, item=False)["text"],
                "seconds_including_other_language": average,
                "text_including_other_language": duration(average, item=False)["text"],
            },
            "start": data[0]["range"]["start"],
            "end": data[-1]["range"]["end"],
        }
        return json_response(body, 200)

    paths = ("/users/{user}/statusbar/today", "/users/{user}/status_bar/today")
    routes = [Route(prefix + path, status_bar, methods=["GET"]) for prefix in PREFIXES for path in paths]
    return routes + [
        Route(prefix + "/users/{user}/summaries", summaries, methods=["GET"]) for prefix in PREFIXES
    ]
