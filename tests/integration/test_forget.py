"""owner.forget: revoke upstream first, then erase every byte about the owner from the file, its
WAL and free pages, keeping billing totals and a gap-free, anonymous event feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from aisd.kontomatik._models import ImportResult
from aisd.rpc import RpcError
from aisd.store import ConsentIn, NewEvent, SqliteStore, open_store
from tests import store_calls as sc
from tests.integration.data_helpers import (
    FixedClock,
    StubRefresher,
    call,
    consent_import,
    handlers,
    refresh_import,
    result,
    tx,
)

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)

GONE_OWNER = "crm-4471-maria-sochacka"
GONE_IBANS = ("PL61109010140000071219812874", "PL10105000997603123456789123")
GONE_WORDS = (
    "Maria Sochacka",
    "Czynsz Stolarska 15/2 Jaworzno",
    "Przelew od Zdzisław Kowalczyk",
    "Apteka Pod Orłem",
)
KEPT_OWNER = "crm-5520-jan-brzechwa"
KEPT_IBAN = "PL27114020040000300201355387"
KEPT_WORDS = ("Jan Brzechwa", "Opłata za szkołę muzyczną")


def gone_result(extra: str = "") -> ImportResult:
    return result(
        {
            GONE_IBANS[0]: (
                tx(date(2026, 1, 20), "-1500.00", GONE_WORDS[1]),
                tx(date(2026, 1, 25), "800.00", GONE_WORDS[2], party="Zdzisław Kowalczyk"),
            ),
            GONE_IBANS[1]: (tx(date(2026, 1, 27), "-42.10", GONE_WORDS[3] + extra),),
        },
        persons=(GONE_WORDS[0],),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


async def build(store: SqliteStore) -> tuple[str, str]:
    """Two owners with tokens, imports, raw replies, events; returns their token ids."""
    raw = f"<reply>{GONE_WORDS[0]} {GONE_IBANS[0]}</reply>".encode()
    _, gone_token = await consent_import(store, GONE_OWNER, 1, gone_result(), now=T0, raw=raw)
    assert gone_token is not None
    await refresh_import(store, gone_token, gone_result(" 24h"), now=T0 + timedelta(days=3))
    kept_raw = f"<reply>{KEPT_WORDS[0]} {KEPT_IBAN}</reply>".encode()
    _, kept_token = await consent_import(
        store,
        KEPT_OWNER,
        1,
        result(
            {KEPT_IBAN: (tx(date(2026, 1, 26), "-250.00", KEPT_WORDS[1]),)},
            persons=(KEPT_WORDS[0],),
        ),
        now=T0 + timedelta(hours=1),
        raw=kept_raw,
    )
    assert kept_token is not None
    await sc.append_events(
        store,
        [
            NewEvent(
                "quota.deferred",
                GONE_OWNER,
                gone_token,
                data={"reason": "quota", "accounts": [{"iban": GONE_IBANS[0], "used": 4}]},
            )
        ],
        now=T0 + timedelta(days=4),
    )
    return gone_token, kept_token


def file_bytes(db: Path) -> bytes:
    parts = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


@pytest.mark.anyio
async def test_forget_erases_the_bytes_and_keeps_billing_and_the_feed(store: SqliteStore) -> None:
    clock = FixedClock(T0 + timedelta(days=200))
    refresher = StubRefresher(store, clock)
    table = handlers(store, clock, refresher)
    gone_token, kept_token = await build(store)
    before_forget = await call(table, "data.changes")
    bills = {m: await call(table, "billing.report", month=m) for m in ("2026-03", "2026-07")}
    assert bills["2026-03"]["imports"] == 3  # both owners' first imports and one refresh
    raw_before = file_bytes(store.path)
    for word in (GONE_OWNER, *GONE_IBANS, *GONE_WORDS):
        assert word.encode() in raw_before  # the check below is not vacuous

    out = await call(table, "owner.forget", ownerExternalId=GONE_OWNER)

    assert out["tokensRevoked"] == 1
    assert refresher.revoked == [gone_token]
    # owner, consent, 2 sessions... at least: owner, consent, 2 imports, 2 raw replies,
    # 2 accounts, 3 transactions (+ their change log), 2 token accounts.
    assert out["rowsDeleted"] >= 12
    after = file_bytes(store.path)
    assert store.path.with_name(store.path.name + "-wal").stat().st_size == 0
    for word in (GONE_OWNER, *GONE_IBANS, *GONE_WORDS, "sig-SECRET-" + GONE_OWNER):
        assert after.count(word.encode()) == 0, word
    for word in (KEPT_OWNER, KEPT_IBAN, *KEPT_WORDS):
        assert after.count(word.encode()) > 0, word

    # Billing reports the same totals; the forgotten token stays, anonymous.
    for month, bill in bills.items():
        again = await call(table, "billing.report", month=month)
        for key in ("cycles", "imports", "initialImports", "refreshImports"):
            assert again[key] == bill[key], (month, key)
        owners = {line["tokenId"]: line["ownerExternalId"] for line in again["tokens"]}
        assert owners == {gone_token: None, kept_token: KEPT_OWNER}

    # The feed stays gap-free and loses the owner, ids and types kept.
    events = await sc.list_events(store, after=0, limit=1000)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert all(e.owner_external_id != GONE_OWNER for e in events)
    assert events[-1].type == "owner.forgotten"
    assert events[-1].owner_external_id is None
    assert events[-1].data["tokenIds"] == [gone_token]
    assert events[-1].data["rowsDeleted"] == out["rowsDeleted"]
    deferred = next(e for e in events if e.type == "quota.deferred")
    assert deferred.token_id == gone_token
    assert deferred.data == {"reason": "quota"}
    revoked = next(e for e in events if e.type == "token.revoked")
    assert revoked.owner_external_id is None
    kept = [e for e in events if e.owner_external_id == KEPT_OWNER]
    assert {e.type for e in kept} >= {"consent.received", "import.succeeded"}

    # Feed consumers learn to delete the forgotten rows; the kept owner's are untouched.
    since = await call(table, "data.changes", cursor=before_forget["cursor"])
    gone_ids = {
        t["transactionId"] for t in before_forget["added"] if t["ownerExternalId"] == GONE_OWNER
    }
    assert {r["transactionId"] for r in since["removed"]} == gone_ids
    assert len(gone_ids) == 3
    assert since["added"] == []
    assert since["modified"] == []
    assert not await sc.owner_exists(store, GONE_OWNER)
    assert await sc.owner_exists(store, KEPT_OWNER)

    with pytest.raises(RpcError) as again_forget:
        await call(table, "owner.forget", ownerExternalId=GONE_OWNER)
    assert again_forget.value.code == -32004


@pytest.mark.anyio
async def test_an_upstream_failure_deletes_nothing(store: SqliteStore) -> None:
    clock = FixedClock(T0 + timedelta(days=10))
    table = handlers(store, clock, StubRefresher(store, clock, fail=True))
    await build(store)
    events_before = len(await sc.list_events(store, after=0, limit=1000))
    with pytest.raises(RpcError) as failed:
        await call(table, "owner.forget", ownerExternalId=GONE_OWNER)
    assert failed.value.code == -32010
    assert "SECRET" not in str(failed.value)
    assert "SECRET" not in repr(failed.value.data)
    assert await sc.owner_exists(store, GONE_OWNER)
    assert len(await sc.transactions(store, GONE_OWNER, GONE_IBANS[0])) == 2
    assert len(await sc.list_events(store, after=0, limit=1000)) == events_before


@pytest.mark.anyio
async def test_an_open_import_blocks_the_erasure(store: SqliteStore) -> None:
    clock = FixedClock(T0 + timedelta(days=10))
    table = handlers(store, clock)
    _, token = await consent_import(store, GONE_OWNER, 1, gone_result(), now=T0)
    assert token is not None
    # A consent without multiple access whose import has not run yet.
    await store.submit_consent(
        ConsentIn(GONE_OWNER, "session-late", "sig-SECRET-late"),
        now=T0,
        since=date(2025, 1, 1),
        expires_at=T0 + timedelta(days=180),
    )
    with pytest.raises(RpcError) as busy:
        await call(table, "owner.forget", ownerExternalId=GONE_OWNER)
    assert busy.value.code == -32009
    assert await sc.owner_exists(store, GONE_OWNER)
