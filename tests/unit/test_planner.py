"""The refresh planner: quota, spread, back-off, upstream limit, expiry and clock steps."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisd.planner import (
    Access,
    LedgerIndex,
    Plan,
    Reason,
    Rules,
    TokenPlanInput,
    Usage,
    backoff_delay,
    decide_due,
    effective_now,
    ledger_horizon,
    may_refresh_now,
    phase,
    plan,
    pseudo_account,
    reach,
    window_usage,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def token(token_id: str = "tok", **changes: object) -> TokenPlanInput:
    base = TokenPlanInput(
        token_id=token_id,
        created_at=T0,
        expires_at=T0 + timedelta(days=180),
        accounts=frozenset({"PL01"}),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def pick_due(
    tokens: list[TokenPlanInput],
    ledger: list[Access],
    accounts_of: dict[str, frozenset[str]],
    rules: Rules,
    now: datetime,
) -> list[Access]:
    """The tick's picks alone."""
    return list(decide_due(tokens, ledger, accounts_of, rules, now).picked)


def replanning_picks(
    tokens: list[TokenPlanInput],
    ledger: list[Access],
    accounts_of: dict[str, frozenset[str]],
    rules: Rules,
    now: datetime,
) -> list[Access]:
    """The rule written plainly: in order of first plans, every token re-planned against the
    working ledger before it is let through."""
    mapping = {**accounts_of, **{t.token_id: t.accounts for t in tokens}}
    working = LedgerIndex(ledger, mapping)
    now = effective_now(now, ledger)
    far = datetime.max.replace(tzinfo=UTC)
    first = {t.token_id: plan(t, ledger, mapping, rules, now) for t in tokens}
    picked: list[Access] = []
    for tok in sorted(tokens, key=lambda t: (first[t.token_id].at or far, t.token_id)):
        current = plan(tok, working.relevant(tok.token_id), mapping, rules, now)
        if current.at is not None and current.at <= now:
            access = Access(tok.token_id, now)
            working.add(access)
            picked.append(access)
    return picked


def max_in_any_window(times: list[datetime], window: timedelta) -> int:
    """The most accesses any half-open window [s, s + window) holds (it starts at an access)."""
    ordered = sorted(times)
    return max(
        (bisect_left(ordered, start + window) - i for i, start in enumerate(ordered)), default=0
    )


# -- rules and small helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"refreshes_per_day": 0},
        {"refreshes_per_day": 5},
        {"window": timedelta(0)},
        {"backoff_base": timedelta(0)},
        {"final_margin": -M},
        {"guard": -M},
        {"jitter": timedelta(hours=2)},  # above a quarter of the 6 h interval
        {"jitter": -M},
    ],
)
def test_rules_reject_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        Rules(**changes)  # type: ignore[arg-type]


def test_rules_defaults() -> None:
    rules = Rules()
    assert rules.interval == timedelta(hours=6)
    assert rules.span == timedelta(hours=24, minutes=2)
    assert Rules(refreshes_per_day=3).interval == timedelta(hours=8)


def test_reach_uses_a_pseudo_account_while_accounts_are_unknown() -> None:
    assert reach("a", frozenset()) == frozenset({"token:a"})
    assert pseudo_account("a") == "token:a"
    assert reach("a", frozenset({"PL01", "PL02"})) == frozenset({"PL01", "PL02"})


def test_effective_now_never_goes_back_and_horizon_covers_the_guard() -> None:
    ledger = [Access("a", T0 + H), Access("b", T0 - H)]
    assert effective_now(T0, ledger) == T0 + H
    assert effective_now(T0 + 2 * H, ledger) == T0 + 2 * H
    assert effective_now(T0, []) == T0
    assert ledger_horizon(T0, Rules()) == T0 - timedelta(hours=24, minutes=2)


def test_phase_is_stable_and_within_one_interval() -> None:
    rules = Rules()
    assert phase("tok", rules) == phase("tok", rules)
    assert phase("tok", rules) != phase("other", rules)
    assert timedelta(0) <= phase("tok", rules) < rules.interval


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=4))
def test_backoff_doubles_and_never_exceeds_the_interval(failures: int, per_day: int) -> None:
    rules = Rules(refreshes_per_day=per_day)
    delay = backoff_delay(failures, rules)
    assert rules.backoff_base <= delay <= rules.interval
    assert backoff_delay(failures + 1, rules) >= delay


def test_backoff_sequence() -> None:
    rules = Rules()
    assert [backoff_delay(n, rules) / M for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 320, 360]


# -- window usage --------------------------------------------------------------------------------


def test_window_usage_counts_every_token_reaching_the_account() -> None:
    rules = Rules()
    accounts_of = {"a": frozenset({"PL01"}), "b": frozenset({"PL01", "PL02"}), "c": frozenset()}
    ledger = [
        Access("a", T0 - 25 * H),  # left the window
        Access("a", T0 - 20 * H),
        Access("b", T0 - 10 * H),
        Access("c", T0 - 5 * H),  # reaches only its pseudo-account
    ]
    usage = window_usage(ledger, accounts_of, "PL01", T0, rules)
    assert usage == Usage("PL01", 2, 4, T0 - 20 * H + rules.span)
    assert not usage.full
    assert window_usage(ledger, accounts_of, "PL02", T0, rules).used == 1
    assert window_usage(ledger, accounts_of, "token:c", T0, rules).used == 1
    assert window_usage(ledger, accounts_of, "PL09", T0, rules) == Usage("PL09", 0, 4, None)


def test_window_usage_when_full_tells_when_room_appears() -> None:
    rules = Rules(refreshes_per_day=2)
    ledger = [Access("a", T0 - 20 * H), Access("a", T0 - 10 * H), Access("a", T0 - 1 * H)]
    usage = window_usage(ledger, {"a": frozenset({"PL01"})}, "PL01", T0, rules)
    # Three counted against two allowed: room for one once the two oldest have left.
    assert usage.used == 3
    assert usage.full
    assert usage.next_free_at == T0 - 10 * H + rules.span


# -- plan: the normal cadence --------------------------------------------------------------------


def test_first_refresh_is_the_first_slot_half_an_interval_after_consent() -> None:
    rules = Rules()
    result = plan(token(), [], {}, rules, T0)
    assert result.reason is Reason.SCHEDULED
    assert result.at is not None
    assert T0 + 3 * H <= result.at < T0 + 9 * H + rules.jitter
    assert result.usage == (Usage("PL01", 0, 4, None),)
    # Re-planning at a later tick gives the same time: phase and jitter are hashed, not drawn.
    assert plan(token(), [], {}, rules, T0 + H).at == result.at


def test_single_token_refreshes_about_every_interval() -> None:
    rules = Rules()
    tok = token(expires_at=T0 + timedelta(days=3))
    ledger: list[Access] = []
    clock = T0
    while (result := plan(tok, ledger, {}, rules, clock)).at is not None:
        clock = result.at
        assert pick_due([tok], ledger, {}, rules, clock) == [Access("tok", clock)]
        ledger.append(Access("tok", clock))
        tok = replace(tok, last_refresh_at=clock)
    gaps = [b.at - a.at for a, b in itertools.pairwise(ledger)]
    assert all(rules.interval / 2 <= gap <= rules.interval + rules.span / 4 for gap in gaps)
    assert 10 <= len(ledger) <= 12  # 3 days x 4, less the start-up half interval
    assert result.reason is Reason.EXPIRED


def test_missed_slots_fire_once_at_now() -> None:
    rules = Rules()
    tok = token(last_refresh_at=T0)
    later = T0 + timedelta(days=2)  # the daemon was down
    result = plan(tok, [Access("tok", T0)], {}, rules, later)
    assert result.at == later
    assert result.reason is Reason.SCHEDULED


# -- plan: quota ---------------------------------------------------------------------------------


def test_quota_shared_across_tokens_defers_to_when_the_oldest_leaves() -> None:
    rules = Rules()
    accounts_of = {"other": frozenset({"PL01", "PL02"})}
    ledger = [Access("other", T0 - 23 * H + i * H) for i in range(4)]
    tok = token(created_at=T0 - timedelta(days=3), last_refresh_at=T0 - timedelta(days=2))
    result = plan(tok, ledger, accounts_of, rules, T0)
    assert result.reason is Reason.QUOTA
    assert result.at == T0 - 23 * H + rules.span
    assert result.usage == (Usage("PL01", 4, 4, T0 - 23 * H + rules.span),)
    assert may_refresh_now(tok, ledger, accounts_of, rules, T0) == (False, result.at)


def test_quota_waits_for_every_account_the_token_reaches() -> None:
    rules = Rules(refreshes_per_day=1)
    accounts_of = {"x": frozenset({"PL01"}), "y": frozenset({"PL02"})}
    ledger = [Access("x", T0 - 20 * H), Access("y", T0 - 2 * H)]
    tok = token(accounts=frozenset({"PL01", "PL02"}), created_at=T0 - timedelta(days=5))
    tok = replace(tok, last_refresh_at=T0 - timedelta(days=4))
    result = plan(tok, ledger, accounts_of, rules, T0)
    assert result.reason is Reason.QUOTA
    assert result.at == T0 - 2 * H + rules.span
    assert [u.account for u in result.usage] == ["PL01", "PL02"]


def test_unknown_accounts_count_against_the_tokens_own_pseudo_account() -> None:
    rules = Rules(refreshes_per_day=1)
    tok = token(accounts=frozenset(), last_refresh_at=T0 - H)
    ledger = [Access("tok", T0 - H), Access("stranger", T0 - H)]
    result = plan(tok, ledger, {"stranger": frozenset({"PL01"})}, rules, T0)
    assert result.usage == (Usage("token:tok", 1, 1, T0 - H + rules.span),)
    assert result.at is not None
    assert result.at >= T0 - H + rules.span


def test_a_token_with_unknown_accounts_gets_one_access_a_window() -> None:
    # Its accounts may be shared with another token unseen: one access per window bounds what
    # it can add to them until an import reveals them.
    rules = Rules(refreshes_per_day=4)
    tok = token(accounts=frozenset(), last_refresh_at=T0 - 7 * H)
    result = plan(tok, [Access("tok", T0 - 7 * H)], {}, rules, T0)
    assert result.usage == (Usage("token:tok", 1, 1, T0 - 7 * H + rules.span),)
    assert result.reason is Reason.QUOTA
    assert may_refresh_now(tok, [Access("tok", T0 - 7 * H)], {}, rules, T0)[0] is False


# -- plan: failures and upstream limit -----------------------------------------------------------


def test_failure_backs_off_inside_the_quota() -> None:
    rules = Rules()
    tok = token(last_refresh_at=T0, failures=3)
    result = plan(tok, [Access("tok", T0)], {}, rules, T0)
    assert (result.at, result.reason) == (T0 + 20 * M, Reason.BACKOFF)
    full = [Access("tok", T0 - 3 * H + i * M) for i in range(3)] + [Access("tok", T0)]
    blocked = plan(tok, full, {}, rules, T0)
    assert (blocked.at, blocked.reason) == (T0 - 3 * H + rules.span, Reason.QUOTA)


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=2, max_value=4))
def test_backoff_plan_never_exceeds_the_interval(failures: int, per_day: int) -> None:
    rules = Rules(refreshes_per_day=per_day)
    tok = token(last_refresh_at=T0, failures=failures)
    result = plan(tok, [Access("tok", T0)], {}, rules, T0)
    assert result.reason is Reason.BACKOFF
    assert result.at is not None
    assert T0 < result.at <= T0 + rules.interval


def test_upstream_limit_defers_to_the_given_time_without_retrying() -> None:
    rules = Rules()
    until = T0 + 20 * H
    tok = token(last_refresh_at=T0, upstream_deferred_until=until)
    result = plan(tok, [Access("tok", T0)], {}, rules, T0 + H)
    assert (result.at, result.reason) == (until, Reason.UPSTREAM_LIMIT)
    assert may_refresh_now(tok, [Access("tok", T0)], {}, rules, T0 + H) == (False, until)
    assert pick_due([tok], [Access("tok", T0)], {}, rules, T0 + 19 * H) == []


# -- plan: the end -------------------------------------------------------------------------------


def test_no_refresh_at_or_after_expiry_or_refresh_until() -> None:
    rules = Rules()
    tok = token()
    assert plan(tok, [], {}, rules, tok.expires_at).reason is Reason.EXPIRED
    assert plan(tok, [], {}, rules, tok.expires_at).at is None
    ended = token(refresh_until=T0 + timedelta(days=10))
    result = plan(ended, [], {}, rules, T0 + timedelta(days=10))
    assert (result.at, result.reason) == (None, Reason.ENDED)
    assert may_refresh_now(ended, [], {}, rules, T0 + timedelta(days=10)) == (False, None)


def test_final_harvest_shortly_before_expiry() -> None:
    rules = Rules()
    expires = T0 + timedelta(days=2)
    tok = token(expires_at=expires, last_refresh_at=expires - 5 * H)
    result = plan(tok, [Access("tok", expires - 5 * H)], {}, rules, expires - 5 * H)
    assert result.reason is Reason.FINAL
    assert result.at is not None
    assert expires - rules.final_margin - rules.jitter < result.at <= expires - rules.final_margin
    done = replace(tok, last_refresh_at=result.at)
    after = plan(done, [Access("tok", result.at)], {}, rules, result.at)
    assert after == Plan(None, Reason.EXPIRED, (Usage("PL01", 1, 4, result.at + rules.span),))


def test_final_harvest_waits_for_quota_and_is_skipped_when_none_frees() -> None:
    rules = Rules(refreshes_per_day=1, jitter=timedelta(0))
    expires = T0 + timedelta(days=2)
    others = {"o": frozenset({"PL01"})}
    tok = token(expires_at=expires, created_at=T0 - timedelta(days=5), last_refresh_at=T0)
    # Another token took the account's only access 23.5 h before the final: it frees 32 min after.
    final = expires - H
    busy = [Access("tok", T0), Access("o", final - 23 * H - 30 * M)]
    result = plan(tok, busy, others, rules, final - 2 * H)
    assert (result.at, result.reason) == (final - 23 * H - 30 * M + rules.span, Reason.QUOTA)
    # Taken 30 min before the final, it frees only after expiry: no final at all.
    late = [Access("tok", T0), Access("o", final - 30 * M)]
    assert plan(tok, late, others, rules, final - 20 * M).at is None


@given(
    per_day=st.integers(min_value=1, max_value=4),
    days=st.integers(min_value=1, max_value=6),
    start_minutes=st.integers(min_value=0, max_value=24 * 60),
)
@settings(max_examples=60, deadline=None)
def test_single_token_always_gets_its_final_harvest(
    per_day: int, days: int, start_minutes: int
) -> None:
    rules = Rules(refreshes_per_day=per_day)
    created = T0 + timedelta(minutes=start_minutes)
    tok = token(created_at=created, expires_at=created + timedelta(days=days))
    ledger: list[Access] = []
    clock = created
    while (result := plan(tok, ledger, {}, rules, clock)).at is not None:
        clock = result.at
        ledger.extend(pick_due([tok], ledger, {}, rules, clock))
        tok = replace(tok, last_refresh_at=clock)
    assert ledger
    last = ledger[-1].at
    assert tok.expires_at - rules.final_margin - rules.jitter < last
    assert last <= tok.expires_at - rules.final_margin
    assert max_in_any_window([a.at for a in ledger], rules.window) <= per_day


# -- on-demand refresh ---------------------------------------------------------------------------


def test_may_refresh_now_ignores_the_schedule_but_not_the_quota() -> None:
    rules = Rules(refreshes_per_day=2)
    tok = token(last_refresh_at=T0 - M)
    assert may_refresh_now(tok, [Access("tok", T0 - M)], {}, rules, T0) == (True, None)
    two = [Access("tok", T0 - 2 * H), Access("tok", T0 - M)]
    assert may_refresh_now(tok, two, {}, rules, T0) == (False, T0 - 2 * H + rules.span)


# -- clock steps ---------------------------------------------------------------------------------


def test_a_clock_stepping_back_buys_no_access() -> None:
    rules = Rules(refreshes_per_day=2)
    ledger = [Access("tok", T0), Access("tok", T0 + H)]
    tok = token(last_refresh_at=T0 + H)
    back = T0 - timedelta(days=2)
    result = plan(tok, ledger, {}, rules, back)
    assert result.at == T0 + rules.span
    assert result.usage[0].used == 2
    assert may_refresh_now(tok, ledger, {}, rules, back) == (False, T0 + rules.span)
    assert pick_due([tok], ledger, {}, rules, back) == []


# -- pick_due ------------------------------------------------------------------------------------


def test_pick_due_never_lets_two_tokens_through_on_the_same_room() -> None:
    rules = Rules(refreshes_per_day=1)
    shared = frozenset({"PL01"})
    tokens = [token(t, accounts=shared, created_at=T0 - timedelta(days=3)) for t in "abc"]
    now = T0 + timedelta(days=1)
    picked = pick_due(tokens, [], {}, rules, now)
    assert len(picked) == 1
    assert picked[0].at == now


def test_pick_due_lets_tokens_on_separate_accounts_through_together() -> None:
    rules = Rules()
    tokens = [
        token(t, accounts=frozenset({f"PL{t}"}), created_at=T0 - timedelta(days=3)) for t in "abc"
    ]
    picked = pick_due(tokens, [], {}, rules, T0)
    assert sorted(a.token_id for a in picked) == ["a", "b", "c"]


@st.composite
def due_candidates(
    draw: st.DrawFn,
) -> tuple[Rules, list[TokenPlanInput], list[Access], dict[str, frozenset[str]], datetime]:
    rules = Rules(refreshes_per_day=draw(st.integers(min_value=1, max_value=4)))
    ibans = [f"PL{i:02d}" for i in range(draw(st.integers(min_value=1, max_value=4)))]
    now = T0 + timedelta(days=3)
    tokens = [
        token(
            f"t{i}",
            created_at=now - timedelta(minutes=draw(st.integers(0, 3 * 24 * 60))),
            accounts=draw(st.frozensets(st.sampled_from(ibans))),
            failures=draw(st.integers(0, 2)),
        )
        for i in range(draw(st.integers(min_value=1, max_value=8)))
    ]
    others = {f"o{i}": draw(st.frozensets(st.sampled_from(ibans))) for i in range(3)}
    ledger = sorted(
        draw(
            st.lists(
                st.builds(
                    Access,
                    st.sampled_from([t.token_id for t in tokens] + list(others)),
                    st.integers(0, 30 * 60).map(lambda m: now - timedelta(minutes=m)),
                ),
                max_size=12,
            )
        ),
        key=lambda a: (a.at, a.token_id),
    )
    return rules, tokens, ledger, others, now


@given(due_candidates())
@settings(max_examples=200, deadline=None)
def test_decide_due_picks_as_replanning_every_token_does_and_plans_the_rest(
    case: tuple[Rules, list[TokenPlanInput], list[Access], dict[str, frozenset[str]], datetime],
) -> None:
    rules, tokens, ledger, others, now = case
    decided = decide_due(tokens, ledger, others, rules, now)
    assert list(decided.picked) == replanning_picks(tokens, ledger, others, rules, now)
    picked = {a.token_id for a in decided.picked}
    assert len(picked) == len(decided.picked)
    assert set(decided.plans) == {t.token_id for t in tokens} - picked
    mapping = {**others, **{t.token_id: t.accounts for t in tokens}}
    at = effective_now(now, ledger)
    for tok in tokens:
        if tok.token_id not in picked:
            assert decided.plans[tok.token_id] == plan(tok, ledger, mapping, rules, at)
    # However the candidates share accounts, the picks never overfill a window.
    for iban in {a for t in tokens for a in t.accounts}:
        reaching = {t for t, accounts in mapping.items() if iban in accounts}
        times = [a.at for a in [*ledger, *decided.picked] if a.token_id in reaching]
        assert max_in_any_window(times, rules.span) <= max(
            rules.refreshes_per_day,
            max_in_any_window([a.at for a in ledger if a.token_id in reaching], rules.span),
        )


# -- spread --------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_day", [1, 2, 3, 4])
def test_a_thousand_tokens_spread_over_the_interval(per_day: int) -> None:
    rules = Rules(refreshes_per_day=per_day)
    firsts = [plan(token(f"tok-{i:04d}"), [], {}, rules, T0).at for i in range(1000)]
    bucket = timedelta(minutes=10)
    counts = Counter((at - T0) // bucket for at in firsts if at is not None)
    buckets = rules.interval // bucket
    mean = 1000 / buckets
    assert sum(counts.values()) == 1000
    assert len(counts) >= buckets * 0.9
    assert max(counts.values()) <= 3 * mean


# -- simulation ----------------------------------------------------------------------------------


@dataclass
class Step:
    jump: int | None  # minutes the clock jumps (back or forth); None: to the next planned time
    outcome: str  # of every access picked at this step: ok, fail or limit


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Rules, list[TokenPlanInput], list[Step]]:
    rules = Rules(refreshes_per_day=draw(st.integers(min_value=1, max_value=4)))
    ibans = [f"PL{i:02d}" for i in range(draw(st.integers(min_value=1, max_value=3)))]
    tokens = []
    for i in range(draw(st.integers(min_value=1, max_value=6))):
        created = T0 - timedelta(minutes=draw(st.integers(min_value=0, max_value=2 * 24 * 60)))
        expires = created + timedelta(days=draw(st.integers(min_value=1, max_value=5)))
        until_hours = draw(st.none() | st.integers(min_value=1, max_value=5 * 24))
        tokens.append(
            TokenPlanInput(
                token_id=f"t{i}",
                created_at=created,
                expires_at=expires,
                accounts=draw(st.frozensets(st.sampled_from(ibans))),
                refresh_until=None if until_hours is None else created + until_hours * H,
            )
        )
    steps = draw(
        st.lists(
            st.builds(
                Step,
                st.none() | st.integers(min_value=-12 * 60, max_value=12 * 60),
                st.sampled_from(["ok", "ok", "ok", "fail", "limit"]),
            ),
            min_size=10,
            max_size=150,
        )
    )
    return rules, tokens, steps


def _after(tok: TokenPlanInput, access: Access, outcome: str) -> TokenPlanInput:
    if outcome == "ok":
        return replace(tok, last_refresh_at=access.at, failures=0, upstream_deferred_until=None)
    if outcome == "fail":
        return replace(
            tok, last_refresh_at=access.at, failures=tok.failures + 1, upstream_deferred_until=None
        )
    return replace(tok, last_refresh_at=access.at, upstream_deferred_until=access.at + 7 * H)


@given(scenarios())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_simulation_never_exceeds_the_quota_nor_refreshes_after_the_end(
    scenario: tuple[Rules, list[TokenPlanInput], list[Step]],
) -> None:
    rules, tokens, steps = scenario
    by_id = {t.token_id: t for t in tokens}
    accounts_of = {t.token_id: t.accounts for t in tokens}
    ledger: list[Access] = []
    clock = T0
    for step in steps:
        if step.jump is None:
            planned = [plan(t, ledger, accounts_of, rules, clock).at for t in by_id.values()]
            upcoming = [at for at in planned if at is not None]
            if not upcoming:
                break
            clock = min(upcoming)
        else:
            clock += timedelta(minutes=step.jump)
        picked = pick_due(list(by_id.values()), ledger, accounts_of, rules, clock)
        for access in picked:
            ledger.append(access)
            by_id[access.token_id] = _after(by_id[access.token_id], access, step.outcome)

    times = [a.at for a in ledger]
    assert times == sorted(times)  # recorded at the effective now: never behind
    per_account: dict[str, list[datetime]] = {}
    for access in ledger:
        tok = by_id[access.token_id]
        end = min(tok.expires_at, tok.refresh_until or tok.expires_at)
        assert tok.created_at < access.at < end
        for account in reach(tok.token_id, tok.accounts):
            per_account.setdefault(account, []).append(access.at)
    for account_times in per_account.values():
        assert max_in_any_window(account_times, rules.window) <= rules.refreshes_per_day
