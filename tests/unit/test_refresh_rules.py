"""The small pure rules of the refresh service: a refresh's since, a consent's own limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aisd.refresh import cost_limit_reached, plan_input, refresh_since
from aisd.store import TokenRecord, TokenState

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def token(**changes: object) -> TokenRecord:
    values: dict[str, object] = {
        "token_id": "tok_1",
        "owner_external_id": "o",
        "state": TokenState.ACTIVE,
        "created_at": T0,
        "expires_at": T0 + timedelta(days=180),
        "accounts": frozenset({"PL1"}),
        "last_import_at": None,
        "last_refresh_at": None,
        "next_refresh_at": None,
        "plan_reason": None,
        "failures": 0,
        "upstream_deferred_until": None,
        "refresh_until": None,
        "max_imports": None,
        "imports_done": 1,
        "warned_days": (),
    }
    values.update(changes)
    return TokenRecord(**values)  # type: ignore[arg-type]


def test_since_overlaps_the_last_success_within_reuse_history() -> None:
    today = date(2026, 11, 20)
    assert refresh_since(token(last_import_at=T0 + timedelta(days=18)), today, 3) == date(
        2026, 11, 16
    )
    # Never earlier than the 90 days a reuse session can return.
    assert refresh_since(token(last_import_at=T0 - timedelta(days=200)), today, 3) == date(
        2026, 8, 22
    )
    assert refresh_since(token(), today, 3) == date(2026, 8, 22)


def test_cost_limits_end_refreshes() -> None:
    assert cost_limit_reached(token(), T0) is None
    assert cost_limit_reached(token(max_imports=3, imports_done=2), T0) is None
    assert cost_limit_reached(token(max_imports=3, imports_done=3), T0) == "maxImports reached"
    until = token(refresh_until=date(2026, 11, 10))
    assert cost_limit_reached(until, datetime(2026, 11, 10, 23, 59, tzinfo=UTC)) is None
    assert cost_limit_reached(until, datetime(2026, 11, 11, tzinfo=UTC)) == "refreshUntil reached"


def test_refresh_until_is_the_end_of_that_day_for_the_planner() -> None:
    planned = plan_input(token(refresh_until=date(2026, 11, 10)))
    assert planned.refresh_until == datetime(2026, 11, 11, tzinfo=UTC)
    assert plan_input(token()).refresh_until is None
