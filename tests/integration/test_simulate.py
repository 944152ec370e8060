"""``aisd simulate``: the virtual clock, the simulation's pure rules, and a small real run of
the planner and pipeline against the sandbox, checked against the sandbox's own records."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd._simulation import (
    Summary,
    billed_totals,
    max_in_window,
    months_between,
    next_on_grid,
    plan_consents,
    violations,
)
from aisd.billing import BilledImport, TokenLife, report
from aisd.clock import VirtualClock
from aisd.settings import Settings
from aisd.simulate import Simulation, simulate
from aisd.store import ImportKind, ImportState, TokenRecord, TokenState

START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


# -- the virtual clock -------------------------------------------------------------------------


async def _with_driver(
    clock: VirtualClock,
    body: Callable[[], Awaitable[None]],
    on_advance: Callable[[], None] = lambda: None,
) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(clock.run, on_advance=on_advance))
        await body()
        tg.cancel_scope.cancel()


def _wake_order(delays: list[float]) -> list[tuple[int, float]]:
    clock = VirtualClock(START)
    woke: list[tuple[int, float]] = []

    async def sleeper(i: int, delay: float) -> None:
        await clock.sleep(delay)
        woke.append((i, clock.monotonic()))
        assert clock.now() == START + timedelta(seconds=clock.monotonic())

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for i, delay in enumerate(delays):
                tg.start_soon(sleeper, i, delay)

    anyio.run(_with_driver, clock, body, backend="asyncio")
    return woke


def test_sleepers_wake_in_deadline_order_at_their_deadlines() -> None:
    woke = _wake_order([5.0, 1.0, 3.0, 3.0, 0.0])
    assert woke == [(4, 0.0), (1, 1.0), (2, 3.0), (3, 3.0), (0, 5.0)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), max_size=8))
def test_time_never_goes_backwards_and_never_skips_a_deadline(delays: list[float]) -> None:
    woke = _wake_order(delays)
    times = [at for _, at in woke]
    assert times == sorted(times)
    assert sorted(times) == sorted(max(0.0, d) for d in delays)
    assert [i for i, _ in woke] == sorted(range(len(delays)), key=lambda i: (delays[i], i))


@pytest.mark.anyio
async def test_time_stands_still_while_work_runs_off_the_loop() -> None:
    clock = VirtualClock(START)
    seen: list[float] = []

    def slow() -> None:
        time.sleep(0.05)

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 3600.0)
            with clock.external():
                await anyio.to_thread.run_sync(slow)
            seen.append(clock.monotonic())
        seen.append(clock.monotonic())

    await _with_driver(clock, body)
    assert seen == [0.0, 3600.0]


@pytest.mark.anyio
async def test_a_cancelled_sleep_holds_no_deadline() -> None:
    clock = VirtualClock(START)
    advances: list[float] = []

    async def body() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await clock.sleep(100.0)
        await clock.sleep(500.0)

    await _with_driver(clock, body, on_advance=lambda: advances.append(clock.monotonic()))
    assert advances == [500.0]


@pytest.mark.anyio
async def test_an_alarm_sets_its_event_at_its_moment_and_a_cancelled_one_never() -> None:
    clock = VirtualClock(START)
    advances: list[float] = []
    woke: list[float] = []

    async def body() -> None:
        passed = anyio.Event()
        clock.alarm(START - timedelta(seconds=1), passed)
        assert passed.is_set()  # a moment already reached rings at once
        cancelled, rung = anyio.Event(), anyio.Event()
        cancel = clock.alarm(START + timedelta(seconds=50), cancelled)
        clock.alarm(START + timedelta(seconds=200), rung)
        cancel()
        await rung.wait()
        woke.append(clock.monotonic())
        assert not cancelled.is_set()
        await clock.sleep(100.0)

    await _with_driver(clock, body, on_advance=lambda: advances.append(clock.monotonic()))
    # The cancelled alarm's moment held no time back; the other rang exactly at its own.
    assert woke == [200.0]
    assert advances == [200.0, 300.0]


# -- the pure rules ----------------------------------------------------------------------------


def _brute_window(times: list[datetime], window: timedelta) -> int:
    return max((sum(1 for u in times if t - window < u <= t) for t in times), default=0)


@given(st.lists(st.integers(min_value=0, max_value=5 * 86400), max_size=30))
def test_max_in_window_is_the_providers_rolling_count(offsets: list[int]) -> None:
    times = [START + timedelta(seconds=s) for s in offsets]
    assert max_in_window(times, DAY) == _brute_window(times, DAY)


@given(st.integers(min_value=-(10**7), max_value=10**7), st.integers(min_value=1, max_value=3600))
def test_next_on_grid_is_the_first_grid_point_not_before(offset: int, step: int) -> None:
    moment = START + timedelta(seconds=offset)
    at = next_on_grid(START, timedelta(seconds=step), moment)
    assert at >= moment or (moment < START and at == START)
    assert (at - START) % timedelta(seconds=step) == timedelta(0)
    if moment > START:
        assert at - timedelta(seconds=step) < moment


def test_the_scenario_shares_an_account_and_expires_one_token_inside_the_run() -> None:
    plans = plan_consents(3, 4, 180)
    assert [p.shares_with for p in plans] == [None, 0, None]
    assert [p.access for p in plans] == [180 * DAY, 180 * DAY, 3 * DAY]
    assert all(p.offset < 6 * timedelta(hours=1) for p in plans)
    assert all(p.access == 180 * DAY for p in plan_consents(4, 200, 180))


def test_months_between_lists_every_month_touched() -> None:
    assert months_between(START, START + 40 * DAY) == [(2026, 11), (2026, 12), (2027, 1)]


_lives = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=90 * 86400),  # consent, after START
        st.integers(min_value=1, max_value=180),  # access days
        st.none() | st.integers(min_value=0, max_value=200 * 86400),  # ended after consent
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(_lives, st.lists(st.tuples(st.integers(0, 4), st.integers(0, 300 * 86400)), max_size=40))
def test_the_monthly_reports_sum_to_the_whole_run(
    lives: list[tuple[int, int, int | None]], finishes: list[tuple[int, int]]
) -> None:
    tokens = [
        TokenLife(
            f"tok{i}",
            None,
            START + timedelta(seconds=c),
            START + timedelta(seconds=c) + a * DAY,
            None if e is None else START + timedelta(seconds=c + e),
        )
        for i, (c, a, e) in enumerate(lives)
    ]
    imports = [
        BilledImport(f"tok{i % len(tokens)}", START + timedelta(seconds=s), "refresh")
        for i, s in finishes
    ]
    now = START + 250 * DAY
    months = [report(tokens, imports, y, m, now) for y, m in months_between(START, now)]
    assert (sum(r.cycles for r in months), sum(r.imports for r in months)) == billed_totals(
        tokens, imports, now
    )


def test_a_rule_broken_is_named() -> None:
    summary = Summary(
        started_at=START,
        ended_at=START + DAY,
        real_seconds=1.0,
        refreshes_per_day=2,
        imports={"refresh": {"successful": 3, "queued": 1}},
        reuses=3,
        windows={"PL01": 3, "PL02": 2},
        limit_answers=0,
        late_reuses=0,
        events={},
        tokens={},
        months=(),
        billed=(0, 0),
    )
    assert violations(summary) == [
        "account PL01: 3 reuses within 24 h (limit 2)",
        "1 imports did not end",
    ]


# -- a small real run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    """4 virtual days, 3 tokens (two sharing an account, one expiring on day 3), 4 a day."""
    workdir = tmp_path_factory.mktemp("simulate")
    settings = Settings(refreshes_per_day=4, access_days=180, expiry_warning_days=(14, 7, 3, 1))

    async def go(path: Path) -> Simulation:
        return await simulate(settings, path, days=4, tokens=3)

    return anyio.run(go, workdir, backend="asyncio")


def _end(run: Simulation) -> datetime:
    return run.summary.started_at + 4 * DAY


def _expiring(run: Simulation) -> TokenRecord:
    [token] = [t for t in run.tokens if t.expires_at < _end(run)]
    return token


def test_no_account_ever_exceeds_its_rolling_quota(run: Simulation) -> None:
    reuses = run.sandbox.stats.reuses_by_account
    assert len(reuses) == 4  # 2 + 1 shared + 2, minus the one counted twice
    for times in reuses.values():
        assert 0 < _brute_window(times, DAY) <= 4
    assert run.summary.limit_answers == 0
    assert run.ok, violations(run.summary)


def test_every_import_ended_successfully(run: Simulation) -> None:
    assert run.imports
    assert {i.state for i in run.imports} == {ImportState.SUCCESSFUL}
    assert sum(1 for i in run.imports if i.kind == ImportKind.INITIAL) == 3


def test_each_quota_is_used_at_least_three_times_a_day(run: Simulation) -> None:
    """Tokens sharing an account share its four daily accesses, so refreshes are counted per
    group of tokens bound by a shared account, per day any of them was active."""
    shared = [t for t in run.tokens if t.state == TokenState.ACTIVE]
    assert len(shared) == 2
    assert shared[0].accounts & shared[1].accounts
    groups = [shared, [_expiring(run)]]
    for group in groups:
        ids = {t.token_id for t in group}
        refreshes = sum(
            1
            for i in run.imports
            if i.token_id in ids and i.kind == ImportKind.REFRESH and i.finished_at is not None
        )
        first = min(t.created_at for t in group)
        last = max(min(_end(run), t.expires_at) for t in group)
        assert refreshes / ((last - first) / DAY) >= 3


def test_the_expiring_token_is_warned_refreshed_to_the_end_and_expired(run: Simulation) -> None:
    token = _expiring(run)
    assert token.state == TokenState.EXPIRED
    mine = [e.type for e in run.events if e.token_id == token.token_id]
    assert mine.count("token.expiring") == 4
    assert mine.count("token.expired") == 1
    # The sandbox's own record: its accounts are reached by no other token.
    times = [t for iban in token.accounts for t in run.sandbox.stats.reuses_by_account[iban]]
    assert max(times) < token.expires_at
    assert max(times) >= token.expires_at - timedelta(hours=2)  # the final harvest
    refreshes = [
        i for i in run.imports if i.token_id == token.token_id and i.kind == ImportKind.REFRESH
    ]
    assert refreshes
    assert all(i.started_at is not None and i.started_at < token.expires_at for i in refreshes)


def test_the_monthly_billing_sums_to_the_ended_cycles(run: Simulation) -> None:
    summary = run.summary
    monthly = (sum(r.cycles for r in summary.months), sum(r.imports for r in summary.months))
    assert monthly == summary.billed
    # Only the expired token's cycle has ended; it holds every one of its imports.
    token = _expiring(run)
    own = [i for i in run.imports if i.token_id == token.token_id]
    assert summary.billed == (1, len(own))
