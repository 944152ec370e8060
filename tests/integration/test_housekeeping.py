"""Retention: old merged transactions and raw replies go, the rest stays, one log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aisd.housekeeping import housekeep, raw_reply_cutoff, transaction_cutoff
from aisd.store import SqliteStore, open_store
from tests import store_calls as sc
from tests.integration.data_helpers import FixedClock, call, consent_import, handlers, result, tx

IBAN = "PL61109010140000071219812874"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
TXS = (
    tx(date(2026, 1, 10), "-10.00", "Stara"),
    tx(date(2026, 3, 31), "-20.00", "Graniczna"),
    tx(date(2026, 4, 1), "-30.00", "Nowa"),
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


def test_cutoffs() -> None:
    assert transaction_cutoff(T0, None) is None
    assert transaction_cutoff(T0, 31) == date(2026, 3, 31)
    assert raw_reply_cutoff(T0, 0) is None
    assert raw_reply_cutoff(T0, 10) == T0 - timedelta(days=10)


@pytest.mark.anyio
async def test_housekeeping_purges_what_retention_says(store: SqliteStore) -> None:
    await consent_import(store, "owner-a", 1, result({IBAN: TXS}), now=T0, raw=b"old reply")
    later = T0 + timedelta(days=20)
    await consent_import(store, "owner-b", 1, result({}), now=later, raw=b"new reply")

    with capture_logs() as logs:
        kept = await housekeep(store, now=T0, retention_days=None, raw_retention_days=0)
    assert (kept.transactions_purged, kept.raw_replies_purged) == (0, 0)
    assert len(await sc.transactions(store, "owner-a", IBAN)) == 3
    assert [entry["event"] for entry in logs] == ["housekeeping.done"]

    with capture_logs() as logs:
        report = await housekeep(
            store, now=later + timedelta(minutes=10), retention_days=51, raw_retention_days=10
        )
    # Today is 2026-05-21: 51 days back is 2026-03-31, the first date kept.
    assert report.transactions_before == date(2026, 3, 31)
    assert report.transactions_purged == 1
    assert sorted(t.title for t in await sc.transactions(store, "owner-a", IBAN)) == [
        "Graniczna",
        "Nowa",
    ]
    # The first import finished 20 days ago, the second 5 minutes ago.
    assert report.raw_replies_purged == 1
    assert [reply for _, _, reply in await sc.raw_replies(store, "owner-b")] == [b"new reply"]
    assert await sc.replay_owners(store) == ["owner-b"]
    assert logs == [
        {
            "event": "housekeeping.done",
            "log_level": "info",
            "transactionsPurged": 1,
            "transactionsBefore": "2026-03-31",
            "rawRepliesPurged": 1,
            "rawRepliesBefore": (later + timedelta(minutes=10) - timedelta(days=10)).isoformat(),
        }
    ]
    # The feed from the beginning shows only what is kept.
    feed = await call(handlers(store, FixedClock()), "data.changes")
    assert sorted(t["title"] for t in feed["added"]) == ["Graniczna", "Nowa"]
