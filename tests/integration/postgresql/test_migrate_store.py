"""aisd migrate-store: a SQLite installation copied into PostgreSQL reads the same there."""

from __future__ import annotations

import gzip
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import anyio.to_thread
import psycopg
import pytest

from aisd.cli import main
from aisd.kontomatik._models import CreditCard, ImportResult, Owner
from aisd.store import AccessKind, ConflictError, ConsentIn, open_store
from aisd.store.postgresql import connection_kwargs, copy_sqlite, open_postgres_store
from tests import store_calls as sc
from tests.integration.data_helpers import consent_import, refresh_import, result, tx
from tests.integration.steps_helpers import stop, to_polling
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


async def _installation(path: Path) -> None:
    async with open_store(path) as store:
        for n in range(3):
            _, token_id = await consent_import(
                store,
                f"owner-{n}",
                n,
                result({f"PL0{n}SHARED": (tx(date(2026, 5, 30), "-10.00", f"shop {n}"),)}),
                now=T0,
                raw=b"\x1f\x8b raw reply",
            )
            assert token_id is not None
            await refresh_import(
                store,
                token_id,
                result({f"PL0{n}SHARED": (tx(date(2026, 5, 31), "-5.00", f"bus {n}"),)}),
                now=T0 + timedelta(hours=7),
            )
            # A Reuse ledger row: the copy rebuilds its rows by account.
            await sc.record_access(
                store, AccessKind.REUSE, now=T0 + timedelta(hours=7), token_id=token_id
            )
        # A card beside the accounts, with its owner blocks.
        card = CreditCard(
            "C-1",
            "Karta",
            "**** 1234",
            currency_name="PLN",
            limit=Decimal("5000.00"),
            owners=(Owner(name="Card Holder", kind="OWNER"),),
            transactions=(tx(date(2026, 5, 30), "-7.00", "card shop"),),
        )
        await consent_import(store, "carded", 0, ImportResult(credit_cards=(card,)), now=T0)
        # A reply refused as another owner's, kept for inspection.
        refused = await store.submit_consent(
            ConsentIn("refused", "session-refused", "sig-refused"),
            now=T0,
            since=T0.date(),
            expires_at=T0 + timedelta(days=90),
        )
        c = await to_polling(store, refused.import_id, now=T0)
        # mtime=0: the expected bytes below are compressed again, seconds later.
        kept = gzip.compress(b"<reply/>", mtime=0)
        assert await sc.refuse_foreign_owner(
            store, c, "someone-else", raw_reply=kept, now=T0, polls=1
        )
        await stop(store, c, now=T0)
        # An import in the queue when the daemon was stopped.
        assert token_id is not None
        await store.queue_refresh(token_id, now=T0 + timedelta(hours=14), since=T0.date())


async def test_a_copy_reads_the_same_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "aisd.db"
    await _installation(path)

    counts = await anyio.to_thread.run_sync(copy_sqlite, path, postgres_url)

    assert all(a == b for a, b in counts.values())
    assert counts["transactions"][0] >= 3
    assert counts["events"][0] > 10
    assert counts["refused_replies"] == (1, 1)
    # The ledger by account is not copied: the target's triggers rebuild it from the copied
    # token_accounts and accesses.
    ledger = "SELECT account, sent_at, access_id, token_id FROM reuse_by_account ORDER BY 1, 2, 3"
    with closing(sqlite3.connect(path)) as lite:
        expected = lite.execute(ledger).fetchall()
    with psycopg.connect(**connection_kwargs(postgres_url, password=None)) as conn:
        assert conn.execute(ledger).fetchall() == expected
    assert expected
    pg = await open_postgres_store(postgres_url)
    try:
        async with open_store(path) as sqlite_store:
            for store_a, store_b in ((sqlite_store, pg),):
                assert await sc.list_events(store_b, after=0, limit=1000) == await sc.list_events(
                    store_a, after=0, limit=1000
                )
                assert await store_b.list_tokens() == await store_a.list_tokens()
                assert await sc.counts(store_b) == await sc.counts(store_a)
                assert await store_b.feed_changes(after=0, limit=100) == (
                    await store_a.feed_changes(after=0, limit=100)
                )
                assert await store_b.billing_inputs() == await store_a.billing_inputs()
                for n in range(3):
                    owner = f"owner-{n}"
                    assert await sc.accounts(store_b, owner) == await sc.accounts(store_a, owner)
                    iban = f"PL0{n}SHARED"
                    assert await sc.transactions(store_b, owner, iban) == (
                        await sc.transactions(store_a, owner, iban)
                    )
                    assert await sc.raw_replies(store_b, owner) == await sc.raw_replies(
                        store_a, owner
                    )
                assert await sc.credit_cards(store_b, "carded") == (
                    await sc.credit_cards(store_a, "carded")
                )
                [card] = await sc.credit_cards(store_b, "carded")
                assert card["cardId"] == "C-1"
                assert await sc.card_transactions(store_b, "carded", "C-1") == (
                    await sc.card_transactions(store_a, "carded", "C-1")
                )
                [refused] = await sc.list_imports(store_b, owner_external_id="refused")
                assert await sc.refused_reply(store_b, refused.import_id) == (
                    "OwnerMismatch",
                    gzip.compress(b"<reply/>", mtime=0),
                )
                assert await sc.kontomatik_owner_id(store_b, refused.import_id) == "someone-else"
                assert [j.import_id for j in await store_b.open_jobs()] == [
                    j.import_id for j in await store_a.open_jobs()
                ]
        # New rows continue above the copied ids: the feed goes on without a clash.
        last = await sc.last_event_id(pg)
        claimer = await sc.register_claimer(pg, now=T0, ttl_seconds=30, sole=False, max_running=8)
        [job] = await pg.claim_work(claimer, now=T0 + timedelta(days=1))
        assert job.claim is not None
        assert (await sc.list_events(pg, after=last, limit=10)) == []
    finally:
        await pg.close()
    with pytest.raises(ConflictError):
        await anyio.to_thread.run_sync(copy_sqlite, path, postgres_url)


async def test_the_command_copies_and_refuses_a_running_daemons_database(
    tmp_path: Path,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "aisd.db"
    await _installation(path)
    for name in ("AISD_API_KEY", "AISD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AISD_DB_PATH", str(path))
    url = postgres_server.new_database()
    run = partial(main, ["migrate-store", "--to", url])
    from aisd.instance import instance_lock

    with instance_lock(path):
        assert await anyio.to_thread.run_sync(run) == 1
    assert "stop it first" in capsys.readouterr().err
    assert await anyio.to_thread.run_sync(run) == 0
    out = capsys.readouterr().out
    assert "transactions" in out
    assert "set AISD_DATABASE_URL" in out
