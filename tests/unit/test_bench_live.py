"""The live benchmark's pure parts: send schedule, grouping into calls, percentiles, lag matching,
floors. No services, no clock."""

from __future__ import annotations

import argparse
import itertools
import math
import random
from collections import defaultdict

import pytest

from bench import live_report
from bench.live import _sizes
from bench.pacing import JITTER, due_times, match_lags, percentile, plan_calls


def test_each_user_sends_every_period_with_bounded_jitter():
    period, duration = 30.0, 600.0
    due = due_times(500, period, duration, random.Random(1))
    assert due == sorted(due)
    assert all(0 <= at < duration for at, _ in due)
    by_user = defaultdict(list)
    for at, user in due:
        by_user[user].append(at)
    assert set(by_user) == set(range(500))
    for times in by_user.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(period * (1 - 2 * JITTER) <= gap <= period * (1 + 2 * JITTER) for gap in gaps)


def test_the_rate_is_users_over_period_even_in_a_short_window():
    # jitter moves sends across both ends of the window: as many come in as go out
    due = due_times(4_000, 30.0, 60.0, random.Random(5))
    assert len(due) == pytest.approx(4_000 * 60 / 30, rel=0.01)


def test_calls_take_every_due_heartbeat_once_in_order_never_before_it_is_due():
    rng = random.Random(2)
    due = due_times(2_000, 30.0, 120.0, rng)
    calls = plan_calls(due, rng, max_call=25, max_wait=1.0)
    assert [hb for call in calls for hb in call.due] == due
    sizes = [len(call.due) for call in calls]
    assert min(sizes) >= 1 and max(sizes) == 25
    assert [call.at for call in calls] == sorted(call.at for call in calls)
    for call in calls:
        first, last = call.due[0][0], call.due[-1][0]
        assert call.at >= last  # a heartbeat is sent only once it is due
        assert call.at - first <= 1.0 + 1e-9  # and waits at most max_wait in the buffer


def test_a_call_is_flushed_when_full_or_when_its_first_heartbeat_waited_max_wait():
    rng = random.Random(3)
    # heartbeats 0.3 s apart: a buffer holds at most 4 of them (0, 0.3, 0.6, 0.9) before 1 s passes
    due = [(i * 0.3, i) for i in range(200)]
    calls = plan_calls(due, rng, max_call=25, max_wait=1.0)
    assert max(len(call.due) for call in calls) == 4
    by_age = 0
    for call in calls:
        first, last = call.due[0][0], call.due[-1][0]
        if call.at != last:  # not full: flushed by age, with the next heartbeat due later
            assert call.at == pytest.approx(first + 1.0)
            assert len(call.due) == 4 or call is calls[-1]
            by_age += 1
    assert by_age > len(calls) / 2  # sizes 5-25 (21 of 25 draws) cannot fill


def test_nearest_rank_percentiles():
    samples = list(range(1, 101))
    random.Random(4).shuffle(samples)
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    # a heartbeat never reflected is an infinite lag, and counts as one
    assert percentile([*range(1, 100), math.inf], 99) == 99
    assert percentile([*range(1, 99), math.inf, math.inf], 99) == math.inf


def test_lag_is_the_first_poll_issued_after_the_send_that_counts_it():
    sends = {"a": [1.0, 2.0, 2.1], "b": [1.0]}
    base = {"a": 10, "b": 5}
    polls = [
        (0.5, 0.6, {"a": 11, "b": 5}),  # issued before the send returned: not evidence
        (1.05, 1.1, {"a": 10, "b": 5}),  # not yet
        (1.2, 1.3, {"a": 11, "b": 5}),  # a's first
        (2.5, 2.6, {"a": 13, "b": 5}),  # a's second and third at once
    ]
    lags = match_lags(sends, base, polls)
    assert sorted(lags) == pytest.approx(sorted([0.3, 0.6, 0.5, math.inf]))


def test_a_count_that_reaches_the_next_send_early_is_not_matched_to_it_before_it_was_sent():
    # the count shows base + 2 at a poll issued between the two sends (e.g. out of order): the
    # second heartbeat's lag starts at its own send, and only later polls can reflect it
    sends, base = {"a": [1.0, 3.0]}, {"a": 0}
    polls = [(2.0, 2.1, {"a": 2}), (3.2, 3.3, {"a": 2})]
    assert match_lags(sends, base, polls) == pytest.approx([1.1, 0.3])


def _results(users=10_000, period=30, **totals_by_d):
    live = {
        d.removeprefix("d"): {"cpu_us": {"total": total}, "lag_s": {"p99": 1.0}}
        for d, total in totals_by_d.items()
    }
    return {"config": {"users": users, "period": period}, "live": live}


def test_floors_use_d300_or_a_stricter_longer_day_and_the_900_to_100_ratio():
    met = live_report.floors(_results(d100=100.0, d300=140.0, d900=120.0))
    assert [f["met"] for f in met] == [True, True, True]
    assert "measured at" not in met[0]["floor"]

    no_300 = live_report.floors(_results(d100=100.0, d900=160.0))
    assert no_300[0]["met"] is False and "measured at D=900" in no_300[0]["floor"]
    assert no_300[1]["met"] is False and no_300[1]["value"] == "1.60x"

    short = live_report.floors(_results(users=1_000, d100=100.0))
    assert short[0]["met"] is None and short[1]["met"] is None
    assert "the floor is for 10,000" in short[0]["floor"]


def test_sizes_flag():
    assert _sizes("100,900") == [100, 900]
    for bad in ("", "0", "a,b", "100,-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"sizes|numbers"):
            _sizes(bad)
