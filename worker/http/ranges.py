"""The days a summaries request names, on the user's calendar: ``start``/``end`` (dates, or the
words ``today`` and ``yesterday`` the legacy wakatime CLI sends) or one of WakaTime's ``range``
names. Weeks start on Monday. Pure functions of the user's today."""

from __future__ import annotations

import datetime as dt

from worker.http.responses import HttpError

MAX_DAYS = 366


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def named_range(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """WakaTime's range names ("Last 7 Days", or last_7_days) as (first, last) days."""
    key = name.strip().lower().replace("_", " ")
    monday = today - dt.timedelta(days=today.weekday())
    last_month_end = _month_start(today) - dt.timedelta(days=1)
    ranges = {
        "today": (today, today),
        "yesterday": (today - dt.timedelta(days=1), today - dt.timedelta(days=1)),
        "last 7 days": (today - dt.timedelta(days=6), today),
        "last 7 days from yesterday": (today - dt.timedelta(days=7), today - dt.timedelta(days=1)),
        "last 14 days": (today - dt.timedelta(days=13), today),
        "last 30 days": (today - dt.timedelta(days=29), today),
        "this week": (monday, today),
        "last week": (monday - dt.timedelta(days=7), monday - dt.timedelta(days=1)),
        "this month": (_month_start(today), today),
        "last month": (_month_start(last_month_end), last_month_end),
    }
    if key not in ranges:
        raise HttpError(400, f"unknown range {name!r}: one of {', '.join(r.title() for r in ranges)}")
    return ranges[key]


def parse_day(text: str, today: dt.date, name: str) -> dt.date:
    words = {"today": today, "yesterday": today - dt.timedelta(days=1)}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        return dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise HttpError(400, f"{name} must be a date (YYYY-MM-DD), today or yesterday") from None


def requested_days(params, today: dt.date) -> tuple[dt.date, dt.date]:
    """(first, last) day of a summaries request: ``range``, or ``start`` and ``end``."""
    if params.get("range"):
        return named_range(params["range"], today)
    if not params.get("start") or not params.get("end"):
        raise HttpError(400, "give start and end (YYYY-MM-DD), or a range")
    since, until = parse_day(params["start"], today, "start"), parse_day(params["end"], today, "end")
    if until < since:
        raise HttpError(400, "end must not be before start")
    if (until - since).days >= MAX_DAYS:
        raise HttpError(400, f"a summary covers at most {MAX_DAYS} days")
    return since, until


def day_text(day: dt.date) -> str:
    """How WakaTime names a day: "Mon Jan 1st 2024"."""
    suffix = "th" if 11 <= day.day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day.day % 10, "th")
    return f"{day:%a %b} {day.day}{suffix} {day.year}"
