"""The days a summaries request names (worker.http.ranges)."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.http.ranges import day_text, named_range, requested_days
from worker.http.responses import HttpError

TODAY = dt.date(2024, 3, 13)  # a Wednesday


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Today", TODAY, TODAY),
        ("yesterday", dt.date(2024, 3, 12), dt.date(2024, 3, 12)),
        ("Last 7 Days", dt.date(2024, 3, 7), TODAY),
        ("last_7_days_from_yesterday", dt.date(2024, 3, 6), dt.date(2024, 3, 12)),
        ("Last 30 Days", dt.date(2024, 2, 13), TODAY),
        ("This Week", dt.date(2024, 3, 11), TODAY),
        ("Last Week", dt.date(2024, 3, 4), dt.date(2024, 3, 10)),
        ("This Month", dt.date(2024, 3, 1), TODAY),
        ("Last Month", dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
    ],
)
def test_named_ranges(name, first, last):
    assert named_range(name, TODAY) == (first, last)


def test_start_and_end():
    assert requested_days({"start": "today", "end": "today"}, TODAY) == (TODAY, TODAY)
    assert requested_days({"start": "2024-01-01", "end": "2024-01-31"}, TODAY) == (
        dt.date(2024, 1, 1), dt.date(2024, 1, 31))  # fmt: skip
    for params in ({"start": "2024-01-02", "end": "2024-01-01"}, {"start": "2023-01-01", "end": "2024-01-02"},
                   {"start": "soon", "end": "later"}, {}, {"range": "forever"}):  # fmt: skip
        with pytest.raises(HttpError) as refused:
            requested_days(params, TODAY)
        assert refused.value.status == 400


def test_days_read_as_wakatime_names_them():
    assert [day_text(dt.date(2024, 1, d)) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23)] == [
        "Mon Jan 1st 2024", "Tue Jan 2nd 2024", "Wed Jan 3rd 2024", "Thu Jan 4th 2024", "Thu Jan 11th 2024",
        "Fri Jan 12th 2024", "Sat Jan 13th 2024", "Sun Jan 21st 2024", "Mon Jan 22nd 2024", "Tue Jan 23rd 2024",
    ]  # fmt: skip
