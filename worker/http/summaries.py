"""WakaTime's time summaries, from the day rows: the status bar of today (``statusbar/today`` and
``status_bar/today``, as wakatime-cli ``--today`` and the editor plugins read it).

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
from worker.http.reads import PREFIXES, Reader, iso
from worker.http.responses import json_response

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


def day_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One day's grand total and breakdowns from select_day_breakdown rows (of that day)."""
    seconds: dict[str, dict[str, float]] = {kind: defaultdict(float) for kind in KINDS}
    for row in rows:
        seconds[row["kind"]][display(row["kind"], row["name"])] += row["coding_us"] / 1e6
    total = sum(seconds["categories"].values())
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

    paths = ("/users/{user}/statusbar/today", "/users/{user}/status_bar/today")
    return [Route(prefix + path, status_bar, methods=["GET"]) for prefix in PREFIXES for path in paths]
