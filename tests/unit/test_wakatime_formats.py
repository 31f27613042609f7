"""WakaTime's duration formats, on the values seen in wakatime-cli's fixtures and issues
(docs/wakatime-read-api.md, "Duration fields")."""

from __future__ import annotations

import pytest

from worker.http.summaries import display, duration


@pytest.mark.parametrize(
    ("seconds", "text", "total_digital", "item_digital", "decimal"),
    [
        (8256.598234, "2 hrs 17 mins", "2:17", "2:17:36", "2.28"),
        (7.1, "7 secs", "0:00", "0:00:07", "0.00"),
        (4544, "1 hr 15 mins", "1:15", "1:15:44", "1.25"),
        (2946, "49 mins", "0:49", "0:49:06", "0.82"),
        (3610.8, "1 hr", "1:00", "1:00:10", "1.00"),
        (0, "0 secs", "0:00", "0:00:00", "0.00"),
        (1, "1 sec", "0:00", "0:00:01", "0.00"),
        (3715 * 3600 + 44 * 60 + 5, "3,715 hrs 44 mins", "3715:44", "3715:44:05", "3715.73"),
    ],
)
def test_durations_read_as_wakatime_writes_them(seconds, text, total_digital, item_digital, decimal):
    total, item = duration(seconds, item=False), duration(seconds, item=True)
    assert (total["text"], total["digital"], total["decimal"]) == (text, total_digital, decimal)
    assert (item["text"], item["digital"], item["decimal"]) == (text, item_digital, decimal)
    assert "seconds" not in total and type(item["seconds"]) is int
    for numbers in (total, item):  # Go ints in wakatime-cli: a float (2.0) would fail its decode
        assert type(numbers["hours"]) is int and type(numbers["minutes"]) is int
        assert all(isinstance(numbers[k], str) for k in ("text", "digital", "decimal"))


def test_names_as_wakatime_shows_them():
    assert display("categories", "ai coding") == "AI Coding"
    assert display("categories", "writing tests") == "Writing Tests"
    assert display("editors", "vscode") == "VS Code"
    assert display("editors", "someeditor") == "someeditor"
    assert display("operating_systems", "macos") == "Mac"
    assert display("machines", "") == "Unknown"
