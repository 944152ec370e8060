"""billing.report and billing.forecast on a store with hand-made tokens and imports, against
numbers computed by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from aisd.rpc import RpcError
from aisd.store import SqliteStore, TokenState
from tests import store_calls as sc
from tests.integration.backends import BACKENDS, open_backend
from tests.integration.data_helpers import (
    FixedClock,
    call,
    consent_import,
    handlers,
    refresh_import,
    result,
    tx,
)


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


ONE = result({"PL61109010140000071219812874": (tx(date(2026, 1, 5), "-1.00", "Kiosk"),)})


@pytest.fixture(params=BACKENDS)
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SqliteStore]:
    async with open_backend(request.param, tmp_path, request) as opened:
        yield opened


async def build(store: SqliteStore) -> tuple[str, str]:
    """Token A: consent 2026-01-31 10:00, 180 days: cycles end Mar 2, Apr 1, May 1, May 31,
    Jun 30, Jul 30 (10:00). Imports: initial Jan 31 10:05, refreshes Feb 10 and Mar 5.

    Token B: consent 2026-03-15 10:00, revoked 2026-04-01 12:00: one cycle cut short, due in
    April. Imports: initial Mar 15 10:05, refresh Mar 20.

    A consent without multiple access (no token) is never billed by cycle.
    """
    _, a = await consent_import(store, "owner-a", 1, ONE, now=at(1, 31))
    _, b = await consent_import(store, "owner-b", 1, ONE, now=at(3, 15))
    await consent_import(store, "owner-c", 1, ONE, now=at(3, 1), token=False)
    assert a is not None
    assert b is not None
    await refresh_import(store, a, ONE, now=at(2, 10))
    await refresh_import(store, a, ONE, now=at(3, 5))
    await refresh_import(store, b, ONE, now=at(3, 20))
    assert await sc.end_token(store, b, TokenState.REVOKED, now=at(4, 1, 12), reason="test")
    return a, b


@pytest.mark.anyio
async def test_monthly_reports_match_hand_computed_numbers(store: SqliteStore) -> None:
    a, b = await build(store)
    table = handlers(store, FixedClock(at(8, 15)))
    march = await call(table, "billing.report", month="2026-03")
    assert march == {
        "month": "2026-03",
        "cycles": 1,
        "imports": 2,
        "initialImports": 1,
        "refreshImports": 1,
        "tokens": [
            {
                "tokenId": a,
                "ownerExternalId": "owner-a",
                "cycles": 1,
                "imports": 2,
                "initialImports": 1,
                "refreshImports": 1,
            }
        ],
    }
    april = await call(table, "billing.report", month="2026-04")
    assert (april["cycles"], april["imports"]) == (2, 3)
    assert (april["initialImports"], april["refreshImports"]) == (1, 2)
    lines = {line["tokenId"]: (line["cycles"], line["imports"]) for line in april["tokens"]}
    assert lines == {a: (1, 1), b: (1, 2)}
    may = await call(table, "billing.report", month="2026-05")
    assert (may["cycles"], may["imports"]) == (2, 0)
    august = await call(table, "billing.report", month="2026-08")
    assert (august["cycles"], august["imports"], august["tokens"]) == (0, 0, [])


@pytest.mark.anyio
async def test_cycles_not_ended_yet_are_not_billed(store: SqliteStore) -> None:
    await build(store)
    table = handlers(store, FixedClock(at(5, 15)))
    may = await call(table, "billing.report", month="2026-05")
    # Only A's cycle ending May 1 has ended; the one ending May 31 has not.
    assert (may["cycles"], may["imports"]) == (1, 0)


@pytest.mark.anyio
async def test_forecast_projects_active_tokens(store: SqliteStore) -> None:
    await build(store)
    table = handlers(store, FixedClock(at(4, 15)))
    out = await call(table, "billing.forecast", months=3)
    # April: A's cycle [Mar 2, Apr 1) with 1 import, B's cut-short cycle with 2.
    # May: A's [Apr 1, May 1): 16 days ahead x 4 = 64; [May 1, May 31): 30 x 4 = 120.
    # June: A's [May 31, Jun 30): 120.
    assert out == {
        "months": [
            {"month": "2026-04", "cycles": 2, "imports": 3},
            {"month": "2026-05", "cycles": 2, "imports": 184},
            {"month": "2026-06", "cycles": 1, "imports": 120},
        ]
    }


@pytest.mark.anyio
async def test_billing_params_are_validated(store: SqliteStore) -> None:
    table = handlers(store, FixedClock(at(4, 15)))
    cases: list[tuple[str, dict[str, object]]] = [
        ("billing.report", {"month": "2026-13"}),
        ("billing.report", {}),
        ("billing.forecast", {"months": 0}),
        ("billing.forecast", {"months": 25}),
    ]
    for method, params in cases:
        with pytest.raises(RpcError) as bad:
            await call(table, method, **params)
        assert bad.value.code == -32602
    empty = await call(table, "billing.report", month="2026-12")
    assert empty["tokens"] == []
    assert empty["cycles"] == 0


@pytest.mark.anyio
async def test_inputs_are_bounded_by_the_month(store: SqliteStore) -> None:
    a, b = await build(store)
    tokens, imports = await store.billing_inputs(start=at(8, 1, 0), end=at(9, 1, 0))
    assert tokens == []
    assert imports == []
    tokens, imports = await store.billing_inputs(start=at(4, 1, 0), end=at(5, 1, 0))
    assert sorted(t.token_id for t in tokens) == sorted([a, b])
    ended = {t.token_id: t.ended_at for t in tokens}
    assert ended == {a: None, b: at(4, 1, 12)}
    assert sorted((i.token_id == a, i.kind) for i in imports) == sorted(
        [
            (True, "initial"),
            (True, "refresh"),
            (True, "refresh"),
            (False, "initial"),
            (False, "refresh"),
        ]
    )
