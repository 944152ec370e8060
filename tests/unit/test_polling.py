"""The pipeline's timing rules: spacing always within bounds, polls aimed just after the end."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.pipeline import STORAGE_PAUSE_MAX_SECONDS, PipelineConfig
from aisd.polling import (
    AIM_MARGIN_SECONDS,
    HIT_STEP_SECONDS,
    MISS_FACTOR,
    DurationEstimates,
    backoff,
    jobs_quota_delay,
    late_reply_grace,
    poll_delay,
)
from aisd.settings import Settings

bounds = st.tuples(st.floats(2.0, 5.0), st.floats(2.0, 5.0)).map(sorted)


@given(
    elapsed=st.floats(0, 600),
    expected=st.none() | st.floats(0, 600),
    mm=bounds,
)
def test_delay_always_within_bounds(
    elapsed: float, expected: float | None, mm: list[float]
) -> None:
    lo, hi = mm
    d = poll_delay(elapsed, expected, min_seconds=lo, max_seconds=hi)
    assert lo <= d <= hi


@given(expected=st.floats(0.5, 120), mm=bounds)
def test_some_poll_lands_just_after_the_expected_end(expected: float, mm: list[float]) -> None:
    lo, hi = mm
    t = 0.0
    times = []
    while t < expected + 3 * hi:
        t += poll_delay(t, expected, min_seconds=lo, max_seconds=hi)
        times.append(t)
    target = expected + AIM_MARGIN_SECONDS
    first_after = min(x for x in times if x >= target - 1e-9)
    reachable = any(k * lo <= target + 1e-9 and target <= k * hi + 1e-9 for k in range(1, 100))
    if reachable:
        # Some sequence of allowed steps lands on the aim: so does ours.
        assert abs(first_after - target) < 1e-6
    else:
        assert first_after - target < lo


def test_no_estimate_polls_at_the_minimum() -> None:
    assert poll_delay(0.0, None, min_seconds=2.0, max_seconds=5.0) == 2.0
    assert poll_delay(30.0, None, min_seconds=3.0, max_seconds=5.0) == 3.0


def test_far_end_is_approached_in_max_steps_then_aimed() -> None:
    # Expected end at 12 s: three equal steps land on 12.15.
    seq = []
    t = 0.0
    for _ in range(3):
        d = poll_delay(t, 12.0, min_seconds=2.0, max_seconds=5.0)
        seq.append(round(d, 2))
        t += d
    assert seq == [4.05, 4.05, 4.05]
    # Expected end at 6 s: two equal steps of 3.075.
    assert round(poll_delay(0.0, 6.0, min_seconds=2.0, max_seconds=5.0), 3) == 3.075


def test_estimates_converge_to_a_fixed_duration() -> None:
    est = DurationEstimates()
    true = 8.0
    delays = []
    for _ in range(200):
        expected = est.expected("KontoBank")
        t, aimed = 0.0, None
        while True:
            t += poll_delay(t, est.expected("KontoBank"), min_seconds=2.0, max_seconds=5.0)
            if expected is not None and aimed is None and t >= expected:
                aimed = t >= true
            if t >= true:
                break
        delays.append(t - true)
        est.observe("KontoBank", aimed_hit=aimed, finished_at=t)
    late = sorted(delays[50:])
    assert late[len(late) // 2] <= 0.5  # median delay after learning
    assert est.expected("KontoBank") is not None
    assert abs(est.expected("KontoBank") - true) < 1.0  # type: ignore[operator]


def test_estimates_are_per_target() -> None:
    est = DurationEstimates()
    est.observe("A", aimed_hit=None, finished_at=4.0)
    est.observe("B", aimed_hit=None, finished_at=9.0)
    assert est.expected("A") == 4.0
    assert est.expected("B") == 9.0
    assert est.expected("C") is None


@given(attempt=st.integers(0, 100), seed=st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, seed: int) -> None:
    d = backoff(attempt, base=5.0, cap=300.0, rng=random.Random(seed))
    full = min(300.0, 5.0 * 2 ** min(attempt, 30))
    assert full / 2 <= d <= full


@given(attempt=st.integers(0, 50), seed=st.integers(0, 2**32))
def test_jobs_quota_delay_starts_at_10_to_15_s(attempt: int, seed: int) -> None:
    d = jobs_quota_delay(attempt, random.Random(seed))
    assert d <= 120.0
    if attempt == 0:
        assert 10.0 <= d <= 15.0
    else:
        assert d >= 10.0


def test_a_batch_of_hits_aimed_at_one_value_moves_the_estimate_once() -> None:
    est = DurationEstimates()
    est.observe("K", aimed_hit=None, finished_at=10.0)
    est.observe("K", aimed_hit=False, finished_at=12.0, aimed_at=10.0)  # settles the step
    aim = est.expected("K")
    assert aim is not None
    for _ in range(8):  # eight commands started together, all aimed at `aim`, all hits
        est.observe("K", aimed_hit=True, finished_at=aim + 0.2, aimed_at=aim)
    assert est.expected("K") == pytest.approx(aim - HIT_STEP_SECONDS)


def test_a_hit_aimed_below_the_current_estimate_is_ignored() -> None:
    est = DurationEstimates()
    est.observe("K", aimed_hit=None, finished_at=10.0)
    est.observe("K", aimed_hit=False, finished_at=12.0, aimed_at=10.0)
    current = est.expected("K")
    assert current is not None
    est.observe("K", aimed_hit=True, finished_at=9.5, aimed_at=current - 1.0)
    assert est.expected("K") == current


def test_a_miss_raises_from_the_aim_and_resets_the_step() -> None:
    est = DurationEstimates()
    est.observe("K", aimed_hit=None, finished_at=20.0, running_at=16.0)
    # The first observation descends in large steps through the (16, 20] bracket...
    est.observe("K", aimed_hit=True, finished_at=20.0, aimed_at=20.0)
    first_drop = 20.0 - est.by_target["K"]
    assert first_drop > HIT_STEP_SECONDS
    # ...until an aimed poll misses: then up by MISS_FACTOR steps, and small steps after.
    aim = est.by_target["K"]
    est.observe("K", aimed_hit=False, finished_at=aim + 2.0, aimed_at=aim)
    assert est.by_target["K"] == pytest.approx(aim + HIT_STEP_SECONDS * MISS_FACTOR)
    raised = est.by_target["K"]
    est.observe("K", aimed_hit=True, finished_at=raised + 0.1, aimed_at=raised)
    assert est.by_target["K"] == pytest.approx(raised - HIT_STEP_SECONDS)


def test_an_unknown_bank_uses_the_quickest_known_estimate() -> None:
    est = DurationEstimates()
    assert est.expected(None) is None
    est.observe("slow", aimed_hit=None, finished_at=30.0)
    est.observe("fast", aimed_hit=None, finished_at=6.0)
    assert est.expected(None) == 6.0


@given(timeout=st.floats(0.1, 600), retry_max=st.floats(0.1, 600))
def test_the_reply_grace_outlasts_the_request_and_a_storage_retry(
    timeout: float, retry_max: float
) -> None:
    grace = late_reply_grace(request_timeout=timeout, storage_retry_max=retry_max)
    # Every phase of the request (pool, connect, write, read) at its timeout, then the
    # sender's longest pause between two tries of the write, and still a margin.
    assert grace > 4 * timeout + retry_max


def test_the_reply_grace_grows_with_the_http_timeout() -> None:
    short = late_reply_grace(request_timeout=5.0, storage_retry_max=30.0)
    long = late_reply_grace(request_timeout=30.0, storage_retry_max=30.0)
    assert long - short == pytest.approx(4 * 25.0)
    assert late_reply_grace(request_timeout=30.0, storage_retry_max=30.0) == 155.0


def test_the_pipeline_takes_the_reply_grace_from_the_http_timeout() -> None:
    config = PipelineConfig.from_settings(Settings(http_timeout_seconds=10.0))
    expected = late_reply_grace(request_timeout=10.0, storage_retry_max=STORAGE_PAUSE_MAX_SECONDS)
    assert config.reply_grace_seconds == expected
