"""owner.forget on PostgreSQL: the owner's rows are deleted and the tables vacuumed; billing,
the feed and the other owner stay whole. (What WAL, replicas and backups keep is outside
aisd's reach: the README says so.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import cast

import psycopg
import pytest

from aisd.kontomatik._models import CreditCard, ImportResult, Owner
from aisd.store import ConsentIn, SqliteStore
from aisd.store.postgresql import open_postgres_store
from tests import store_calls as sc
from tests.integration.data_helpers import (
    FixedClock,
    StubRefresher,
    call,
    consent_import,
    handlers,
    tx,
)
from tests.integration.steps_helpers import stop, to_polling
from tests.integration.test_forget import (
    GONE_IBANS,
    GONE_OWNER,
    GONE_WORDS,
    KEPT_IBAN,
    KEPT_OWNER,
    KEPT_WORDS,
    T0,
    build,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqliteStore]:
    pg = await open_postgres_store(postgres_url)
    try:
        yield cast(SqliteStore, pg)
    finally:
        await pg.close()


def every_row(url: str) -> str:
    """The text of every row of every table of the database."""
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        return "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(f"SELECT t::text FROM {table} t")
        )


async def test_forget_deletes_the_rows_and_keeps_billing_and_the_feed(
    store: SqliteStore, postgres_url: str, tmp_path: Path
) -> None:
    clock = FixedClock(T0 + timedelta(days=200))
    refresher = StubRefresher(store, clock)
    table = handlers(store, clock, refresher)
    gone_token, kept_token = await build(store)
    bills = {m: await call(table, "billing.report", month=m) for m in ("2026-03", "2026-07")}
    before = every_row(postgres_url)
    for word in (GONE_OWNER, *GONE_IBANS, *GONE_WORDS):
        assert word in before  # the check below is not vacuous

    out = await call(table, "owner.forget", ownerExternalId=GONE_OWNER)

    assert out["tokensRevoked"] == 1
    assert out["rowsDeleted"] >= 12
    after = every_row(postgres_url)
    for word in (GONE_OWNER, *GONE_IBANS, *GONE_WORDS, "sig-SECRET-" + GONE_OWNER):
        assert word not in after, word
    for word in (KEPT_OWNER, KEPT_IBAN, *KEPT_WORDS):
        assert word in after, word
    for month, bill in bills.items():
        again = await call(table, "billing.report", month=month)
        for key in ("cycles", "imports", "initialImports", "refreshImports"):
            assert again[key] == bill[key], (month, key)
        owners = {line["tokenId"]: line["ownerExternalId"] for line in again["tokens"]}
        assert owners == {gone_token: None, kept_token: KEPT_OWNER}
    events = await sc.list_events(store, after=0, limit=1000)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "owner.forgotten"
    # The dead row versions are gone from the tables too (VACUUM ran after the erasure).
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'owners'"
        ).fetchone()
    assert row == (True,)


async def test_forget_erases_the_owners_cards_and_refused_replies(
    store: SqliteStore, postgres_url: str
) -> None:
    clock = FixedClock(T0 + timedelta(days=1))
    table = handlers(store, clock, StubRefresher(store, clock))
    card = CreditCard(
        "CARD-GONE",
        "Karta",
        "**** 9876",
        owner="Cardholder Gone",
        owners=(Owner(name="Owner Block Gone", kind="OWNER"),),
        transactions=(tx(T0.date(), "-3.00", "card title gone"),),
    )
    await consent_import(store, "carded-gone", 0, ImportResult(credit_cards=(card,)), now=T0)
    refused = await store.submit_consent(
        ConsentIn("carded-gone", "session-refused-gone", "sig-refused-gone"),
        now=T0,
        since=T0.date(),
        expires_at=T0 + timedelta(days=90),
    )
    c = await to_polling(store, refused.import_id, now=T0)
    reply = b"refused reply gone"
    assert await sc.refuse_foreign_owner(store, c, "echo-gone", raw_reply=reply, now=T0, polls=1)
    await stop(store, c, now=T0)
    words = ("CARD-GONE", "9876", "Cardholder Gone", "Owner Block Gone", "card title gone")
    before = every_row(postgres_url)
    for word in (*words, "echo-gone"):
        assert word in before  # the check below is not vacuous
    assert await sc.refused_reply(store, refused.import_id) is not None

    await call(table, "owner.forget", ownerExternalId="carded-gone")

    after = every_row(postgres_url)
    for word in (*words, "echo-gone", "carded-gone"):
        assert word not in after, word
    assert await sc.refused_reply(store, refused.import_id) is None
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM refused_replies").fetchone() == (0,)
