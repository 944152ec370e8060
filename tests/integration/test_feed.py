"""data.changes: an exact incremental feed over the merged transactions, paged by cursor."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.rpc import RpcError
from aisd.rpc.methods_data import decode_cursor, encode_cursor
from aisd.store import SqliteStore
from aisd.store.sqlite import LATEST_VERSION, migrate
from aisd.store.sqlite._feed import fold
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

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
IBAN_A = "PL61109010140000071219812874"
IBAN_B = "PL27114020040000300201355387"
D1, D2, D3 = date(2026, 4, 28), date(2026, 4, 29), date(2026, 4, 30)

FIRST = (
    tx(D1, "-20.00", "Biedronka zakupy"),
    tx(D2, "-35.50", "Orlen paliwo", status="PENDING"),
    tx(D3, "1200.00", "Wynagrodzenie"),
)
# The pending row is booked, the salary vanished (a bank correction), a new row appears.
SECOND = (
    tx(D1, "-20.00", "Biedronka zakupy"),
    tx(D2, "-35.50", "Orlen paliwo"),
    tx(D3, "-9.99", "Spotify"),
)


@pytest.fixture(params=BACKENDS)
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SqliteStore]:
    async with open_backend(request.param, tmp_path, request) as opened:
        yield opened


def titles(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["title"] for item in items)


async def drain(table: Any, cursor: str | None, limit: int, **extra: Any) -> list[dict[str, Any]]:
    pages = []
    while True:
        params: dict[str, Any] = {"limit": limit, **extra}
        if cursor is not None:
            params["cursor"] = cursor
        page = await call(table, "data.changes", **params)
        pages.append(page)
        cursor = page["cursor"]
        if not page["hasMore"]:
            return pages


# -- the fold, pure --------------------------------------------------------------------------


def test_fold_keeps_one_change_per_row() -> None:
    entries = [
        (1, 10, "added"),
        (2, 11, "added"),
        (3, 10, "modified"),
        (4, 11, "removed"),
        (5, 12, "modified"),
        (6, 13, "removed"),
        (7, 12, "modified"),
    ]
    folded = fold(entries)
    assert folded.added == (10,)
    assert folded.modified == (12,)
    assert folded.removed == (13,)


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "modify", "remove"]), st.integers(0, 5)), max_size=40
)


@given(ops=OPS, sizes=st.lists(st.integers(1, 6), min_size=1, max_size=10))
@settings(max_examples=300, deadline=None)
def test_any_paging_of_any_log_replicates_exactly_once(
    ops: list[tuple[str, int]], sizes: list[int]
) -> None:
    # Build a change log like the store's: ids never reused, each write a new sequence value.
    live: dict[int, int] = {}  # id -> version
    log: list[tuple[int, int, str]] = []
    next_id = 1
    for op, pick in ops:
        seq = len(log) + 1
        ids = sorted(live)
        if op == "add" or not ids:
            live[next_id] = seq
            log.append((seq, next_id, "added"))
            next_id += 1
        elif op == "modify":
            target = ids[pick % len(ids)]
            live[target] = seq
            log.append((seq, target, "modified"))
        else:
            target = ids[pick % len(ids)]
            del live[target]
            log.append((seq, target, "removed"))
    replica: set[int] = set()
    start, i = 0, 0
    while start < len(log):
        page = log[start : start + sizes[i % len(sizes)]]
        i += 1
        start += len(page)
        folded = fold(page)
        for tx_id in folded.added:
            assert tx_id not in replica  # an addition is news, never a repeat
            replica.add(tx_id)
        for tx_id in folded.modified:
            assert tx_id in replica  # a modification is of a row already delivered
        for tx_id in folded.removed:
            replica.discard(tx_id)
    assert replica == set(live)


# -- cursors ---------------------------------------------------------------------------------


@given(st.integers(0, 10**17))
def test_cursor_round_trips(seq: int) -> None:
    assert decode_cursor(encode_cursor(seq)) == seq


@pytest.mark.parametrize(
    "bad", ["", "x", "djE6", "djE6LTE", "djI6NQ", "djE6MDU", "!!!!", "djE6NQ=="]
)
def test_malformed_cursors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        decode_cursor(bad)


# -- against a real store --------------------------------------------------------------------


@pytest.mark.anyio
async def test_changes_since_a_cursor_are_each_reported_once(store: SqliteStore) -> None:
    table = handlers(store, FixedClock())
    _, token = await consent_import(store, "owner-a", 1, result({IBAN_A: FIRST}), now=T0)
    first = await call(table, "data.changes")
    assert titles(first["added"]) == ["Biedronka zakupy", "Orlen paliwo", "Wynagrodzenie"]
    assert first["modified"] == []
    assert first["removed"] == []
    assert first["hasMore"] is False
    salary = next(t for t in first["added"] if t["title"] == "Wynagrodzenie")
    fuel = next(t for t in first["added"] if t["title"] == "Orlen paliwo")
    assert fuel["status"] == "PENDING"
    assert fuel["bookedOn"] is None
    assert salary["ownerExternalId"] == "owner-a"
    assert salary["iban"] == IBAN_A
    assert salary["currencyName"] == "PLN"
    assert salary["currencyAmount"] == "1200.00"
    assert salary["transactionOn"] == "2026-04-30"
    assert isinstance(salary["transactionId"], str)
    assert salary["transactionId"].isdigit()

    assert token is not None
    await refresh_import(store, token, result({IBAN_A: SECOND}), now=T0 + timedelta(hours=6))
    second = await call(table, "data.changes", cursor=first["cursor"])
    assert titles(second["added"]) == ["Spotify"]
    assert [m["transactionId"] for m in second["modified"]] == [fuel["transactionId"]]
    assert second["modified"][0]["status"] == "DONE"
    assert second["modified"][0]["bookedOn"] == "2026-04-29"
    assert second["removed"] == [{"transactionId": salary["transactionId"]}]

    # Nothing new: the same cursor comes back and nothing is repeated.
    third = await call(table, "data.changes", cursor=second["cursor"])
    assert (third["added"], third["modified"], third["removed"]) == ([], [], [])
    assert third["cursor"] == second["cursor"]

    # From the beginning: added then modified is added with the latest values; added then
    # removed is nowhere.
    whole = await call(table, "data.changes")
    assert titles(whole["added"]) == ["Biedronka zakupy", "Orlen paliwo", "Spotify"]
    assert whole["modified"] == []
    assert whole["removed"] == []
    assert next(t for t in whole["added"] if t["title"] == "Orlen paliwo")["status"] == "DONE"


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [1, 2, 3, 5000])
async def test_paging_never_skips_or_repeats(store: SqliteStore, limit: int) -> None:
    table = handlers(store, FixedClock())
    _, token = await consent_import(store, "owner-a", 1, result({IBAN_A: FIRST}), now=T0)
    assert token is not None
    await refresh_import(store, token, result({IBAN_A: SECOND}), now=T0 + timedelta(hours=6))
    replica: dict[str, dict[str, Any]] = {}
    pages = await drain(table, None, limit)
    for page in pages:
        assert len(page["added"]) + len(page["modified"]) + len(page["removed"]) <= limit
        for item in page["added"]:
            assert item["transactionId"] not in replica
            replica[item["transactionId"]] = item
        for item in page["modified"]:
            assert item["transactionId"] in replica
            replica[item["transactionId"]] = item
        for item in page["removed"]:
            replica.pop(item["transactionId"], None)
    live = await sc.transactions(store, "owner-a", IBAN_A)
    assert sorted(replica) == sorted(str(t.id) for t in live)
    assert {r["title"]: r["status"] for r in replica.values()} == {
        "Biedronka zakupy": "DONE",
        "Orlen paliwo": "DONE",
        "Spotify": "DONE",
    }
    # The last cursor resumes exactly: nothing more.
    tail = await call(table, "data.changes", cursor=pages[-1]["cursor"])
    assert (tail["added"], tail["modified"], tail["removed"]) == ([], [], [])


@pytest.mark.anyio
async def test_the_owner_filter_and_its_errors(store: SqliteStore) -> None:
    table = handlers(store, FixedClock())
    await consent_import(store, "owner-a", 1, result({IBAN_A: FIRST}), now=T0)
    await consent_import(store, "owner-b", 1, result({IBAN_B: (tx(D1, "-1.00", "Kiosk"),)}), now=T0)
    only_b = await call(table, "data.changes", ownerExternalId="owner-b")
    assert [(t["ownerExternalId"], t["title"]) for t in only_b["added"]] == [("owner-b", "Kiosk")]
    everyone = await call(table, "data.changes")
    assert len(everyone["added"]) == 4

    with pytest.raises(RpcError) as missing:
        await call(table, "data.changes", ownerExternalId="nobody")
    assert missing.value.code == -32004
    for bad in ["garbage", encode_cursor(10_000), 17]:
        with pytest.raises(RpcError) as refused:
            await call(table, "data.changes", cursor=bad)
        assert refused.value.code == -32602
        assert refused.value.data == {"field": "cursor"}
    with pytest.raises(RpcError) as too_many:
        await call(table, "data.changes", limit=5001)
    assert too_many.value.code == -32602
    assert too_many.value.data == {"field": "limit"}


def test_migration_keeps_legacy_rows_and_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    assert migrate(path, target=3) == 3
    ts = "2026-05-01T08:00:00.000000Z"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"INSERT INTO owners (id, external_id, created_at) VALUES (1, 'o', '{ts}')")
        conn.execute(
            "INSERT INTO accounts (id, owner_id, iban, currency_name, updated_at)"
            f" VALUES (1, 1, '{IBAN_A}', 'PLN', '{ts}')"
        )
        conn.execute(
            "INSERT INTO transactions (id, account_id, transaction_on, amount, title, change_seq)"
            " VALUES (3, 1, '2026-04-01', '-1.00', 'Kiosk', 7)"
        )
        # Id 9 was handed out and removed before the upgrade.
        conn.execute("INSERT INTO transaction_tombstones VALUES (8, 9, 1, NULL, '2026-05-01')")
    assert migrate(path) == LATEST_VERSION
    with closing(sqlite3.connect(path)) as conn, conn:
        rows = conn.execute("SELECT change_seq, transaction_id, kind FROM transaction_changes")
        assert rows.fetchall() == [(7, 3, "added")]
        conn.execute(
            "INSERT INTO transactions (account_id, transaction_on, amount, title, change_seq)"
            " VALUES (1, '2026-04-02', '-2.00', 'Nowy', 9)"
        )
        new_id = conn.execute("SELECT MAX(id) FROM transactions").fetchone()[0]
        assert new_id == 10  # the merge, not a trigger, logs it (see the feed tests above)
