"""The pipeline's timing rules: spacing always within bounds, polls aimed just after the end."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.pipeline import STORAGE_PAUSE_MAX_SECONDS, PipelineConfig
from aisd.polling import (
    AIM_MARGIN_SECONDS,
    MISS_STEP_MAX_SECONDS,
    MISS_STEP_SECONDS,
    PROBE_EVERY,
    RESOLUTION_SECONDS,
    Aim,
    Bracket,
    DurationEstimates,
    after_aimed,
    backoff,
    discovery_phase,
    jobs_quota_delay,
    late_reply_grace,
    learned,
    next_aim,
    poll_delay,
)
from aisd.settings import Settings

bounds = st.tuples(st.floats(2.0, 5.0), st.floats(2.0, 5.0)).map(sorted)
phases = st.floats(0.0, 1.0, exclude_max=True)


@given(
    elapsed=st.floats(0, 600),
    aim=st.none() | st.floats(0, 600),
    mm=bounds,
    phase=phases,
)
def test_delay_always_within_bounds(
    elapsed: float, aim: float | None, mm: list[float], phase: float
) -> None:
    lo, hi = mm
    d = poll_delay(elapsed, aim, min_seconds=lo, max_seconds=hi, phase=phase)
    assert lo <= d <= hi


@given(aim=st.floats(0.5, 120), mm=bounds)
def test_some_poll_lands_on_the_aim(aim: float, mm: list[float]) -> None:
    lo, hi = mm
    t = 0.0
    times = []
    while t < aim + 3 * hi:
        t += poll_delay(t, aim, min_seconds=lo, max_seconds=hi)
        times.append(t)
    first_after = min(x for x in times if x >= aim - 1e-9)
    reachable = any(k * lo <= aim + 1e-9 and aim <= k * hi + 1e-9 for k in range(1, 100))
    if reachable:
        # Some sequence of allowed steps lands on the aim: so does ours.
        assert abs(first_after - aim) < 1e-6
    else:
        assert first_after - aim < lo


def test_an_aim_a_rounding_error_past_one_maximal_step_is_reached_in_one() -> None:
    # Found by the property above: ceil(5.0 / 4.999999999999999) is 2, whose steps of 2.5 fall
    # below the minimum, so the polls came at 3 s and 6 s and missed the aim.
    delay = poll_delay(0.0, 5.0, min_seconds=3.0, max_seconds=4.999999999999999)
    assert delay == 4.999999999999999


def test_no_estimate_polls_at_the_minimum_after_a_phased_first_poll() -> None:
    assert poll_delay(0.0, None, min_seconds=2.0, max_seconds=5.0) == 2.0
    assert poll_delay(0.0, None, min_seconds=2.0, max_seconds=5.0, phase=0.5) == 3.0
    # The phase stays within the band even when the band is narrower than the minimum.
    assert poll_delay(0.0, None, min_seconds=3.0, max_seconds=4.0, phase=0.5) == 3.5
    assert poll_delay(30.0, None, min_seconds=3.0, max_seconds=5.0, phase=0.9) == 3.0


def test_far_end_is_approached_in_max_steps_then_aimed() -> None:
    # Aim at 12.15 s: three equal steps land on it.
    seq = []
    t = 0.0
    for _ in range(3):
        d = poll_delay(t, 12.15, min_seconds=2.0, max_seconds=5.0)
        seq.append(round(d, 2))
        t += d
    assert seq == [4.05, 4.05, 4.05]
    # Aim at 6.15 s: two equal steps of 3.075.
    assert round(poll_delay(0.0, 6.15, min_seconds=2.0, max_seconds=5.0), 3) == 3.075


@given(k=st.integers(0, 10))
def test_discovery_phases_of_a_batch_interleave(k: int) -> None:
    n = 2**k
    got = sorted(discovery_phase(i) for i in range(n))
    assert got == [i / n for i in range(n)]


@given(n=st.integers(-5, 10**6))
def test_discovery_phase_is_within_the_unit(n: int) -> None:
    assert 0.0 <= discovery_phase(n) < 1.0


def simulate(true: float, commands: int, *, lo: float = 2.0, hi: float = 5.0) -> list[float]:
    """Run commands of one bank, one after another, against a fixed duration ``true`` as the
    pipeline does; return each command's delay from its end to the poll that saw it. Asserts
    the spacing rule on every poll."""
    est = DurationEstimates()
    delays = []
    for _ in range(commands):
        aim = est.aim("K")
        phase = est.next_phase() if aim is None else 0.0
        t, hit, running = 0.0, None, None
        while True:
            d = poll_delay(
                t, None if aim is None else aim.at, min_seconds=lo, max_seconds=hi, phase=phase
            )
            assert lo <= d <= hi
            t += d
            if aim is not None and hit is None and t >= aim.at - 1e-9:
                hit = t >= true
            if t >= true:
                break
            running = t
        delays.append(t - true)
        est.observe(
            "K", aim=aim if hit is not None else None, hit=hit, finished_at=t, running_at=running
        )
    return delays


@settings(max_examples=30, deadline=None)
@given(true=st.floats(2.5, 90.0))
def test_estimates_converge_to_a_fixed_duration(true: float) -> None:
    delays = simulate(true, 120)
    late = delays[40:]
    assert statistics.median(late) <= RESOLUTION_SECONDS + AIM_MARGIN_SECONDS + 1e-6
    # Once learned, misses (a whole spacing late) are rare.
    assert sum(1 for d in late if d >= 2.0) <= len(late) // PROBE_EVERY


def test_a_duration_below_the_minimum_is_seen_at_the_first_poll() -> None:
    # The first allowed poll is 2 s after the Default Import: at most the aim's margin later.
    assert all(d <= 2.0 - 1.0 + AIM_MARGIN_SECONDS + 1e-9 for d in simulate(1.0, 20))


def test_estimates_are_per_target() -> None:
    est = DurationEstimates()
    est.observe("A", aim=None, hit=None, finished_at=4.0)
    est.observe("B", aim=None, hit=None, finished_at=9.0)
    assert est.expected("A") == 4.0
    assert est.expected("B") == 9.0
    assert est.expected("C") is None
    assert est.aim("C") is None


def test_an_unknown_bank_uses_the_quickest_known_end() -> None:
    est = DurationEstimates()
    assert est.expected(None) is None
    assert est.aim(None) is None
    est.observe("slow", aim=None, hit=None, finished_at=30.0)
    est.observe("fast", aim=None, hit=None, finished_at=6.0)
    assert est.expected(None) == 6.0
    assert est.aim(None) == Aim(at=6.0 + AIM_MARGIN_SECONDS)


observation = st.tuples(
    st.booleans(),  # probe
    st.floats(-1.0, 1.0),  # aim offset from safe
    st.booleans(),  # hit
    st.floats(0.0, 10.0),  # final poll after the aim
)


@given(
    start=st.tuples(st.floats(0.0, 60.0), st.floats(0.0, 60.0)),
    steps=st.lists(observation, max_size=40),
)
def test_bracket_invariants_hold_after_any_observations(
    start: tuple[float, float], steps: list[tuple[bool, float, bool, float]]
) -> None:
    running, finished = sorted(start)
    bracket = learned(None, finished_at=finished, running_at=running)
    for probe, offset, hit, later in steps:
        aim = next_aim(bracket)
        assert aim.at >= bracket.floor
        if aim.probe:
            assert bracket.floor < aim.at < bracket.safe
        aim = Aim(at=max(0.0, bracket.safe + offset), probe=probe)
        bracket = after_aimed(
            bracket,
            aim,
            hit=hit,
            finished_at=aim.at if hit else aim.at + later,
            running_at=None if hit else aim.at,
        )
        assert 0.0 <= bracket.floor <= bracket.safe
        assert MISS_STEP_SECONDS <= bracket.miss_step <= MISS_STEP_MAX_SECONDS


def test_one_command_in_probe_every_probes_a_wide_bracket() -> None:
    est = DurationEstimates()
    est.observe("K", aim=None, hit=None, finished_at=6.0, running_at=4.0)
    aims = [est.aim("K") for _ in range(3 * PROBE_EVERY)]
    probes = [a for a in aims if a is not None and a.probe]
    assert len(probes) == 3
    assert all(a == Aim(at=5.0, probe=True) for a in probes)
    assert all(a == Aim(at=6.0 + AIM_MARGIN_SECONDS) for a in aims if a is not None and not a.probe)


def test_a_narrow_bracket_is_not_probed() -> None:
    bracket = Bracket(safe=5.0, floor=5.0 - RESOLUTION_SECONDS / 2)
    for n in range(3 * PROBE_EVERY):
        bracket.aimed = n
        assert not next_aim(bracket).probe


def test_a_probe_hit_lowers_safe_and_a_probe_miss_raises_floor() -> None:
    bracket = Bracket(safe=6.0, floor=4.0)
    hit = after_aimed(bracket, Aim(5.0, probe=True), hit=True, finished_at=5.0, running_at=2.5)
    assert (hit.safe, hit.floor) == (5.0, 4.0)
    miss = after_aimed(bracket, Aim(5.0, probe=True), hit=False, finished_at=7.0, running_at=5.0)
    assert (miss.safe, miss.floor) == (6.0, 5.0)


def test_a_batch_aimed_alike_moves_the_bracket_once() -> None:
    bracket = Bracket(safe=5.0, floor=4.9)
    aim = next_aim(bracket)
    assert not aim.probe
    moved = bracket
    for _ in range(8):  # eight commands started together, all aimed at `aim`, all missed
        moved = after_aimed(moved, aim, hit=False, finished_at=aim.at + 2.0, running_at=aim.at)
    assert moved.safe == pytest.approx(aim.at + MISS_STEP_SECONDS)
    assert moved.miss_step == 2 * MISS_STEP_SECONDS


def test_misses_in_a_row_double_the_step_and_a_hit_resets_it() -> None:
    bracket = Bracket(safe=5.0, floor=4.9)
    raised = []
    for _ in range(6):
        aim = next_aim(bracket)
        bracket = after_aimed(bracket, aim, hit=False, finished_at=aim.at + 30.0, running_at=aim.at)
        raised.append(bracket.miss_step)
    assert raised == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    aim = next_aim(bracket)
    bracket = after_aimed(bracket, aim, hit=True, finished_at=aim.at, running_at=None)
    assert bracket.miss_step == MISS_STEP_SECONDS


def test_a_miss_never_aims_later_than_the_poll_that_saw_the_end() -> None:
    bracket = Bracket(safe=5.0, floor=4.9, miss_step=MISS_STEP_MAX_SECONDS)
    aim = next_aim(bracket)
    after = after_aimed(bracket, aim, hit=False, finished_at=aim.at + 2.0, running_at=aim.at)
    assert after.safe == aim.at + 2.0


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
