"""Billing: 30-day cycles from consent, due in the month they end, with the imports inside."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.billing import (
    CYCLE,
    BilledImport,
    Cycle,
    MonthForecast,
    Report,
    TokenLife,
    TokenLine,
    cycles,
    forecast,
    month_of,
    report,
)

D = timedelta(days=1)
FAR = datetime(2030, 1, 1, tzinfo=UTC)


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def life(
    created: datetime | None = None, days: int = 180, ended_at: datetime | None = None
) -> TokenLife:
    start = created or at(1, 31)
    return TokenLife("tok", "owner-1", start, start + days * D, ended_at)


def test_month_of_uses_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert month_of(datetime(2026, 3, 1, 1, tzinfo=plus_two)) == "2026-02"
    assert month_of(at(12, 31)) == "2026-12"


def test_token_started_on_the_31st_ends_cycles_on_mar_2_apr_1_and_so_on() -> None:
    tok = life()
    ends = [c.end for c in cycles(tok, FAR)]
    assert ends == [at(3, 2), at(4, 1), at(5, 1), at(5, 31), at(6, 30), at(7, 30)]
    assert [c.month for c in cycles(tok, FAR)] == [
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-05",
        "2026-06",
        "2026-07",
    ]
    assert not any(c.cut_short for c in cycles(tok, FAR))
    for month, due in [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 1), (7, 1), (8, 0)]:
        assert report([tok], [], 2026, month, FAR).cycles == due


def test_180_days_are_exactly_six_cycles_the_last_due_in_its_month() -> None:
    tok = life(created=at(2, 10), days=180)
    all_cycles = cycles(tok, FAR)
    assert len(all_cycles) == 6
    assert all_cycles[-1] == Cycle("tok", 5, at(2, 10) + 150 * D, tok.expires_at, False)
    assert all_cycles[-1].month == month_of(tok.expires_at) == "2026-08"
    assert report([tok], [], 2026, 8, FAR).cycles == 1


def test_a_shorter_access_period_cuts_the_last_cycle_at_expiry() -> None:
    tok = life(created=at(1, 1), days=45)
    assert cycles(tok, FAR) == [
        Cycle("tok", 0, at(1, 1), at(1, 31), False),
        Cycle("tok", 1, at(1, 31), at(2, 15), True),
    ]


def test_revoked_mid_cycle_ends_that_cycle_then() -> None:
    tok = life(created=at(3, 1), ended_at=at(4, 10, 15))
    assert cycles(tok, FAR) == [
        Cycle("tok", 0, at(3, 1), at(3, 31), False),
        Cycle("tok", 1, at(3, 31), at(4, 10, 15), True),
    ]
    imports = [
        BilledImport("tok", at(3, 1, 11), "initial"),
        BilledImport("tok", at(4, 10, 14), "refresh"),
        BilledImport("tok", at(4, 10, 15), "refresh"),  # at the end: outside every cycle
    ]
    april = report([tok], imports, 2026, 4, FAR)
    assert april == Report("2026-04", 1, 1, 0, 1, (TokenLine("tok", "owner-1", 1, 1, 0, 1),))


def test_revocation_on_a_boundary_starts_no_new_cycle() -> None:
    tok = life(created=at(3, 1), ended_at=at(3, 31))
    assert [c.index for c in cycles(tok, FAR)] == [0]
    assert not cycles(life(created=at(3, 1), ended_at=at(3, 1)), FAR)


def test_imports_on_a_boundary_belong_to_the_next_cycle() -> None:
    tok = life(created=at(3, 1))
    imports = [
        BilledImport("tok", at(3, 1), "initial"),  # at the consent: first cycle
        BilledImport("tok", at(3, 31) - timedelta(microseconds=1), "refresh"),
        BilledImport("tok", at(3, 31), "refresh"),  # the boundary: second cycle
        BilledImport("other", at(3, 10), "refresh"),  # another token's
    ]
    march = report([tok], imports, 2026, 3, FAR)
    assert (march.cycles, march.imports, march.initial_imports, march.refresh_imports) == (
        1,
        2,
        1,
        1,
    )
    april = report([tok], imports, 2026, 4, FAR)
    assert (april.cycles, april.imports, april.refresh_imports) == (1, 1, 1)


def test_a_cycle_is_billed_only_once_it_has_ended() -> None:
    tok = life(created=at(3, 1))
    assert report([tok], [], 2026, 3, at(3, 31) - timedelta(seconds=1)).cycles == 0
    assert report([tok], [], 2026, 3, at(3, 31)).cycles == 1
    assert [c.index for c in cycles(tok, at(5, 1))] == [0, 1]


def test_report_lines_are_ordered_and_keep_anonymous_owners() -> None:
    a = TokenLife("b-tok", None, at(3, 1), at(3, 1) + 180 * D)
    b = TokenLife("a-tok", "owner-2", at(3, 5), at(3, 5) + 180 * D)
    result = report([a, b], [], 2026, 4, FAR)
    assert [line.token_id for line in result.tokens] == ["a-tok", "b-tok"]
    assert result.tokens[1].owner_external_id is None


def test_report_rejects_a_bad_month() -> None:
    with pytest.raises(ValueError, match="month"):
        report([], [], 2026, 13, FAR)


def test_forecast_projects_refreshes_of_active_tokens() -> None:
    tok = life(created=at(3, 1))
    now = at(3, 16)
    imports = [BilledImport("tok", at(3, 1, 11), "initial")]
    result = forecast([tok], now, 3, 4, imports)
    assert [f.month for f in result] == ["2026-03", "2026-04", "2026-05"]
    # March: the first cycle ends Mar 31 -> 1 known import + 15 days x 4 ahead.
    assert result[0] == MonthForecast("2026-03", 1, 1 + 60)
    assert result[1] == MonthForecast("2026-04", 1, 120)  # ends Apr 30
    assert result[2] == MonthForecast("2026-05", 1, 120)  # ends May 30


def test_forecast_of_ended_tokens_adds_nothing_new() -> None:
    tok = life(created=at(3, 1), ended_at=at(3, 10))
    imports = [BilledImport("tok", at(3, 2), "refresh")]
    assert forecast([tok], at(3, 20), 2, 4, imports) == [
        MonthForecast("2026-03", 1, 1),
        MonthForecast("2026-04", 0, 0),
    ]


def test_forecast_rolls_over_the_year() -> None:
    months = [f.month for f in forecast([], at(11, 5), 4, 1)]
    assert months == ["2026-11", "2026-12", "2027-01", "2027-02"]


# -- properties ----------------------------------------------------------------------------------

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[TokenLife], list[BilledImport], datetime]:
    tokens = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        created = EPOCH + timedelta(minutes=draw(st.integers(min_value=0, max_value=400 * 1440)))
        expires = created + draw(st.integers(min_value=1, max_value=180)) * D
        ended_minutes = draw(st.none() | st.integers(min_value=0, max_value=200 * 1440))
        ended = None if ended_minutes is None else created + timedelta(minutes=ended_minutes)
        tokens.append(TokenLife(f"t{i}", f"o{i % 2}", created, expires, ended))
    imports = [
        BilledImport(
            tok.token_id,
            tok.created_at
            + timedelta(minutes=draw(st.integers(min_value=-60, max_value=190 * 1440))),
            draw(st.sampled_from(["initial", "refresh"])),
        )
        for tok in tokens
        for _ in range(draw(st.integers(min_value=0, max_value=12)))
    ]
    boundary = draw(st.sampled_from(["cycle", "free"]))
    if boundary == "cycle" and tokens:
        # An import exactly on some cycle boundary.
        tok = tokens[0]
        imports.append(BilledImport(tok.token_id, tok.created_at + CYCLE, "refresh"))
    now = EPOCH + timedelta(minutes=draw(st.integers(min_value=0, max_value=650 * 1440)))
    return tokens, imports, now


def months_between(first: datetime, last: datetime) -> list[tuple[int, int]]:
    result = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        result.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return result


@given(worlds())
@settings(max_examples=200, deadline=None)
def test_monthly_reports_add_up_to_all_ended_cycles(
    world: tuple[list[TokenLife], list[BilledImport], datetime],
) -> None:
    tokens, imports, now = world
    ended = [c for tok in tokens for c in cycles(tok, now)]
    # Brute force: an import is billed iff one ended cycle of its token holds it.
    billed = [
        item
        for item in imports
        if any(c.token_id == item.token_id and c.start <= item.finished_at < c.end for c in ended)
    ]
    reports = [report(tokens, imports, y, m, now) for y, m in months_between(EPOCH, now)]
    assert sum(r.cycles for r in reports) == len(ended)
    assert sum(r.imports for r in reports) == len(billed)
    assert sum(r.initial_imports for r in reports) == sum(i.kind == "initial" for i in billed)
    assert all(r.imports == r.initial_imports + r.refresh_imports for r in reports)
    assert all(r.cycles == sum(line.cycles for line in r.tokens) for r in reports)
    for tok in tokens:
        spans = cycles(tok, now)
        assert all(c.end <= now and c.start < c.end for c in spans)
        assert all(a.end == b.start for a, b in itertools.pairwise(spans))
        assert len(spans) <= 6
    # The forecast of the current month never shows less than is already due in it.
    due_now = report(tokens, imports, now.year, now.month, now)
    current = forecast(tokens, now, 1, 4, imports)[0]
    assert current.cycles >= due_now.cycles
    assert current.imports >= due_now.imports
