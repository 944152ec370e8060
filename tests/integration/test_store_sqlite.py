"""The SQLite store against a real file: intake, pipeline phases, ledger, merge, feed, replay."""

from __future__ import annotations

import gzip
import re
import sqlite3
import stat
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import anyio
import pytest

from aisd.kontomatik._models import (
    Account,
    CommandFailure,
    ImportResult,
    MoneyTransaction,
    Owner,
    Session,
)
from aisd.merge import rebuild
from aisd.phases import Step
from aisd.pipeline import ACCESS_LIMIT_MESSAGE
from aisd.store import (
    AccessKind,
    Claim,
    ConflictError,
    ConsentIn,
    ImportKind,
    ImportPhase,
    ImportState,
    NewEvent,
    NotFoundError,
    SqliteStore,
    StepWrite,
    TokenState,
    open_store,
)
from tests import store_calls as sc
from tests.integration.steps_helpers import held, in_flight, queued, to_polling
from tests.store_calls import TokenOutcome

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
IBAN = "PL69137013140000049678278112"
SIGNATURE = "sig-SECRET-0123456789"
MAID = "maid-SECRET-abcdef"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def consent(n: int = 1, *, owner: str = "owner-1", token: bool = True) -> ConsentIn:
    return ConsentIn(
        owner_external_id=owner,
        session_id=f"session-{n}",
        session_signature=f"{SIGNATURE}-{n}",
        multiple_access_id=f"{MAID}-{n}" if token else None,
        target="KontoBank",
        refresh_until=date(2026, 10, 1),
        max_imports=100,
    )


def fixture_transactions(fixtures_dir: Path) -> tuple[MoneyTransaction, ...]:
    """The first account's transactions of the real reply (test-only reading, not the parser)."""
    root = ET.parse(fixtures_dir / "v1.command-reply.default-import.xml").getroot()
    account = root.find(".//accounts/account")
    assert account is not None
    out: list[MoneyTransaction] = []
    for el in account.iterfind("moneyTransactions/moneyTransaction"):

        def text(tag: str, el: ET.Element = el) -> str | None:
            return el.findtext(tag)

        booked = text("bookedOn")
        balance = text("currencyBalance")
        out.append(
            MoneyTransaction(
                transaction_on=date.fromisoformat(text("transactionOn") or ""),
                booked_on=None if booked is None else date.fromisoformat(booked),
                amount=Decimal(text("currencyAmount") or ""),
                balance=None if balance is None else Decimal(balance),
                title=text("title") or "",
                party=text("party"),
                party_iban=text("partyIban"),
                kind=text("kind"),
                status=text("status"),
                labels=tuple(label.text or "" for label in el.iterfind("labels/label")),
            )
        )
    return tuple(out)


def result_of(txs: tuple[MoneyTransaction, ...], *, balance: str = "259402.51") -> ImportResult:
    return ImportResult(
        owners=(
            Owner(name="Tadeusz Krajowy", kind="CO_OWNER"),
            Owner(name="Maria Sochacka", kind="OWNER", address="Stolarska 15/2 33-543 Jaworzno"),
        ),
        accounts=(
            Account(
                iban=IBAN,
                name="Konto 0",
                currency_name="PLN",
                balance=Decimal(balance),
                funds_available=Decimal(balance),
                transactions=txs,
            ),
        ),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


async def start_initial(store: SqliteStore, n: int = 1, *, now: datetime = T0) -> str:
    """Drive a consent's first import to ``polling``; returns its id."""
    out = await store.submit_consent(
        consent(n), now=now, since=date(2025, 5, 1), expires_at=now + timedelta(days=180)
    )
    await to_polling(store, out.import_id, now=now, command_id=f"cmd-{n}")
    return out.import_id


async def all_events(store: SqliteStore) -> list[tuple[int, str]]:
    return [(e.id, e.type) for e in await sc.list_events(store, after=0, limit=1000)]


# -- intake ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_is_idempotent_per_session(store: SqliteStore) -> None:
    first = await store.submit_consent(
        consent(), now=T0, since=date(2025, 5, 1), expires_at=at(60 * 24 * 180)
    )
    assert first.created
    assert re.fullmatch(r"imp_[0-9a-f]{16}", first.import_id)
    assert first.token_id is not None
    assert re.fullmatch(r"tok_[0-9a-f]{16}", first.token_id)
    events_before = await all_events(store)
    again = await store.submit_consent(
        replace(consent(), session_signature="other"),
        now=at(5),
        since=date(2025, 6, 1),
        expires_at=at(99),
    )
    assert again.import_id == first.import_id
    assert again.token_id == first.token_id
    assert not again.created
    assert await all_events(store) == events_before == [(1, "consent.received")]
    assert [r.import_id for r in await sc.list_imports(store)] == [first.import_id]
    assert await sc.counts(store) == {
        "tokens": {"active": 1, "reauth_required": 0, "revoked": 0, "expired": 0},
        "imports": {"queued": 1, "running": 0, "successful": 0, "failed": 0},
    }
    assert await sc.owner_exists(store, "owner-1")
    assert not await sc.owner_exists(store, "owner-2")


@pytest.mark.anyio
async def test_consent_without_token_and_event_data_without_secrets(store: SqliteStore) -> None:
    out = await store.submit_consent(
        consent(token=False), now=T0, since=date(2025, 5, 1), expires_at=at(1)
    )
    assert out.token_id is None
    [event] = await sc.list_events(store, after=0, limit=10)
    assert event.type == "consent.received"
    assert event.import_id == out.import_id
    assert event.owner_external_id == "owner-1"
    assert event.at == T0
    assert event.data == {"target": "KontoBank", "since": "2025-05-01", "multipleAccess": False}
    with_token = await store.submit_consent(
        consent(2), now=T0, since=date(2025, 5, 1), expires_at=at(10)
    )
    events = await sc.list_events(store, after=0, limit=10)
    assert events[1].token_id == with_token.token_id
    assert events[1].data["expiresAt"] == "2026-05-01T08:10:00.000000Z"
    shown = repr(events) + repr(consent()) + repr(await queued(store, now=at(1), limit=10))
    assert "SECRET" not in shown


@pytest.mark.anyio
async def test_a_batch_stores_each_value_exactly_as_given(tmp_path: Path) -> None:
    # A batch's rows travel as JSON text into one statement per table; a NUL would be cut
    # there, so a batch holding one is written consent by consent instead: either way every
    # value is stored exactly as given.
    odd = ["a\x00b", 'zażółć "quoted" \\ back\\slash', "\\u0000 literally", "\U0001f600\u2028"]
    consents = [
        ConsentIn(
            owner,
            f"session-{owner}",
            f"signature-{owner}-0123456789",
            f"maid-{owner}-0123456789" if n % 2 else None,
            target=owner,
        )
        for n, owner in enumerate(odd)
    ]
    # In a batch of its own, a NUL only where none of the batch's lookups by id would miss it.
    hidden = [
        ConsentIn("plain-1", "plain-1", "signature-\x00-0123456789", "maid-\x00-01234567"),
        ConsentIn("plain-2", "plain-2", "signature-0123456789", target="bank\x00"),
    ]
    path = tmp_path / "aisd.db"
    async with open_store(path) as store:
        for batch in (consents, hidden):
            async with anyio.create_task_group() as tg:
                for c in batch:
                    tg.start_soon(
                        partial(store.submit_consent, c, now=T0, since=T0.date(), expires_at=at(60))
                    )
    consents += hidden
    with closing(sqlite3.connect(path)) as db:
        stored = db.execute(
            "SELECT o.external_id, c.session_id, c.target, s.signature, t.multiple_access_id"
            " FROM consents AS c JOIN owners AS o ON o.id = c.owner_id"
            " JOIN sessions AS s ON s.session_id = c.session_id"
            " LEFT JOIN tokens AS t ON t.consent_id = c.id"
        ).fetchall()
    assert sorted(stored) == sorted(
        (c.owner_external_id, c.session_id, c.target, c.session_signature, c.multiple_access_id)
        for c in consents
    )


# -- the pipeline ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_next_queued_orders_initial_first_then_oldest_and_respects_not_before(
    store: SqliteStore,
) -> None:
    a = await store.submit_consent(consent(1), now=at(0), since=date(2025, 5, 1), expires_at=at(9))
    assert a.token_id is not None
    refresh_old = await store.queue_refresh(a.token_id, now=at(1), since=date(2026, 2, 1))
    # One open refresh per token: the second refresh is another token's, whose consent's own
    # import has ended.
    c = await store.submit_consent(consent(3), now=at(0), since=date(2025, 5, 1), expires_at=at(9))
    assert c.token_id is not None
    await sc.finish_failure(
        store, await held(store, c.import_id), CommandFailure("X", "y"), now=at(0)
    )
    refresh_new = await store.queue_refresh(c.token_id, now=at(2), since=date(2026, 2, 1))
    assert await store.queue_refresh(a.token_id, now=at(2), since=date(2026, 2, 1)) is None
    b = await store.submit_consent(consent(2), now=at(3), since=date(2025, 5, 1), expires_at=at(9))
    jobs = await queued(store, now=at(4), limit=10)
    assert [j.import_id for j in jobs] == [a.import_id, b.import_id, refresh_old, refresh_new]
    assert [j.kind for j in jobs] == [ImportKind.INITIAL] * 2 + [ImportKind.REFRESH] * 2
    assert jobs[0].session == Session("session-1", f"{SIGNATURE}-1")
    assert jobs[0].multiple_access_id is None
    assert jobs[2].session is None
    assert jobs[2].multiple_access_id == f"{MAID}-1"
    assert jobs[2].since == date(2026, 2, 1)
    assert jobs[2].created_at == at(1)
    assert [j.import_id for j in await queued(store, now=at(4), limit=2)] == [
        a.import_id,
        b.import_id,
    ]
    write = StepWrite(Step.REQUEUE, not_before=at(10), attempts=1)
    await store.advance(await held(store, a.import_id), write, now=at(4))
    assert [j.import_id for j in await queued(store, now=at(9), limit=10)] == [
        b.import_id,
        refresh_old,
        refresh_new,
    ]
    later = await queued(store, now=at(10), limit=10)
    assert later[0].import_id == a.import_id
    assert later[0].attempts == 1
    assert later[0].not_before == at(10)


@pytest.mark.anyio
async def test_initial_import_phases(store: SqliteStore) -> None:
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    c = await held(store, out.import_id)
    access = await sc.begin_access(
        store,
        c,
        AccessKind.DEFAULT_IMPORT,
        now=at(1),
        token_id=out.token_id,
        session_id="session-1",
    )
    assert isinstance(access, int)
    [job] = await in_flight(store)
    assert (job.phase, job.default_import_attempts, job.started_at) == (
        ImportPhase.STARTING,
        1,
        at(1),
    )
    assert await queued(store, now=at(2), limit=5) == []
    record = await sc.get_import(store, out.import_id)
    assert record is not None
    assert (record.state, record.started_at) == (ImportState.RUNNING, at(1))
    await sc.record_access_outcome(store, access, outcome="ok")
    command = StepWrite(Step.COMMAND, command_id="455026009", not_before=at(1.1))
    await store.advance(c, command, now=at(1))
    await store.advance(c, StepWrite(Step.POLL, not_before=at(1.2)), now=at(1.1))
    await store.advance(c, StepWrite(Step.POLL, not_before=at(1.3)), now=at(1.2))
    [job] = await in_flight(store)
    assert job.phase == ImportPhase.POLLING
    assert job.command_id == "455026009"
    assert (job.polls, job.last_poll_at, job.not_before) == (2, at(1.2), at(1.3))
    # A retried Default Import counts an attempt but starts the import only once (its reply
    # was lost before the command was known: the import is back in phase starting).
    with closing(sqlite3.connect(store.path)) as plain, plain:
        plain.execute("UPDATE imports SET phase = 'starting' WHERE id = ?", (out.import_id,))
    await sc.begin_access(store, c, AccessKind.DEFAULT_IMPORT, now=at(2), token_id=out.token_id)
    [job] = await in_flight(store)
    assert job.default_import_attempts == 2
    assert job.started_at == at(1)
    await sc.finish_failure(
        store,
        await held(store, out.import_id),
        CommandFailure("InvalidSessionId", "Session expired."),
        now=at(3),
    )
    assert await in_flight(store) == []
    record = await sc.get_import(store, out.import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.finished_at == at(3)
    assert record.error is not None
    assert (record.error.name, record.error.message) == ("InvalidSessionId", "Session expired.")
    assert await all_events(store) == [
        (1, "consent.received"),
        (2, "import.started"),
        (3, "import.failed"),
    ]
    events = await sc.list_events(store, after=2, limit=5)
    assert events[0].data == {
        "errorName": "InvalidSessionId",
        "errorMessage": "Session expired.",
        "polls": 2,
    }
    with pytest.raises(ConflictError):
        await sc.finish_failure(
            store, await held(store, out.import_id), CommandFailure("X", "y"), now=at(4)
        )


@pytest.mark.anyio
async def test_refresh_import_phases_and_deferral_back_to_queued(store: SqliteStore) -> None:
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    assert out.token_id is not None
    refresh = await store.queue_refresh(out.token_id, now=at(1), since=date(2026, 2, 1))
    assert isinstance(refresh, str)
    r = await held(store, refresh)
    await sc.begin_access(store, r, AccessKind.REUSE, now=at(2), token_id=out.token_id)
    [job] = await in_flight(store)
    assert (job.import_id, job.phase, job.started_at) == (refresh, ImportPhase.REUSING, at(2))
    assert job.multiple_access_id == f"{MAID}-1"
    # A lost Reuse reply: back to the queue, not before the back-off.
    await store.advance(r, StepWrite(Step.REQUEUE, not_before=at(5), attempts=1), now=at(3))
    assert await in_flight(store) == []
    assert [j.import_id for j in await queued(store, now=at(4), limit=5)] == [out.import_id]
    [_, job] = await queued(store, now=at(5), limit=5)
    assert (job.import_id, job.phase, job.attempts) == (refresh, ImportPhase.QUEUED, 1)
    r = await held(store, refresh)
    await sc.begin_access(store, r, AccessKind.REUSE, now=at(6), token_id=out.token_id)
    session = StepWrite(Step.SESSION, session=Session("session-r", "sig-r-SECRET"))
    await store.advance(r, session, now=at(6))
    [job] = await in_flight(store)
    assert job.phase == ImportPhase.READY
    assert job.session == Session("session-r", "sig-r-SECRET")
    assert job.multiple_access_id is None  # no longer needed once a session is known
    assert job.started_at == at(2)
    with pytest.raises(ValueError, match="bogus"):
        await store.advance(r, StepWrite(Step("bogus"), not_before=at(7)), now=at(7))


@pytest.mark.anyio
async def test_queue_refresh_refuses_unknown_and_inactive_tokens(
    store: SqliteStore, tmp_path: Path
) -> None:
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    assert out.token_id is not None
    with pytest.raises(NotFoundError):
        await store.queue_refresh("tok_0000000000000000", now=at(1), since=date(2026, 1, 1))
    with closing(sqlite3.connect(tmp_path / "aisd.db")) as plain, plain:
        plain.execute("UPDATE tokens SET state = 'revoked' WHERE id = ?", (out.token_id,))
    assert await sc.token_state(store, out.token_id) == TokenState.REVOKED
    assert await sc.token_state(store, "tok_nope") is None
    assert await store.multiple_access_id(out.token_id) == f"{MAID}-1"
    assert await store.multiple_access_id("tok_nope") is None
    with pytest.raises(ConflictError, match="revoked"):
        await store.queue_refresh(out.token_id, now=at(1), since=date(2026, 1, 1))
    nobody = Claim("imp_nope", "clm_nobody", 0)
    with pytest.raises(NotFoundError):
        await store.advance(nobody, StepWrite(Step.POLL, not_before=at(2)), now=at(1))


@pytest.mark.anyio
async def test_record_access_is_durable_before_it_returns(
    store: SqliteStore, tmp_path: Path
) -> None:
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    access_id = await sc.begin_access(
        store,
        await held(store, out.import_id),
        AccessKind.DEFAULT_IMPORT,
        now=at(1),
        token_id=out.token_id,
        session_id="session-1",
    )
    assert isinstance(access_id, int)
    plain = sqlite3.connect(tmp_path / "aisd.db")
    try:
        row = plain.execute(
            "SELECT kind, token_id, import_id, session_id, sent_at, outcome FROM accesses"
            " WHERE id = ?",
            (access_id,),
        ).fetchone()
        assert row == (
            "default_import",
            out.token_id,
            out.import_id,
            "session-1",
            "2026-05-01T08:01:00.000000Z",
            None,
        )
        await sc.record_access_outcome(store, access_id, outcome="not_sent")
        assert plain.execute("SELECT outcome FROM accesses").fetchall() == [("not_sent",)]
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        plain.close()
    revoke = await sc.record_access(store, AccessKind.REVOKE, now=at(2), token_id=out.token_id)
    assert revoke == access_id + 1
    with pytest.raises(sqlite3.IntegrityError):
        await sc.record_access_outcome(store, revoke, outcome="maybe")
    with pytest.raises(NotFoundError):
        await sc.record_access_outcome(store, 999, outcome="ok")


# -- merge through the store -------------------------------------------------------------------


@pytest.mark.anyio
async def test_finish_success_with_overlapping_second_import(
    store: SqliteStore, fixtures_dir: Path
) -> None:
    real = fixture_transactions(fixtures_dir)
    assert len(real) > 20
    pending = MoneyTransaction(
        transaction_on=date(2023, 5, 22),
        booked_on=None,
        amount=Decimal("-99.90"),
        balance=None,
        title="ALLEGRO  zakupy",
        status="PENDING",
    )
    twin = MoneyTransaction(
        transaction_on=date(2023, 5, 20),
        booked_on=date(2023, 5, 21),
        amount=Decimal("-2.40"),
        balance=None,
        title="BILETOMAT BILET ZTM",
        status="DONE",
    )
    vanishing = real[2]  # 2023-05-19, inside the second import's window
    first_txs = (pending, *real[:2], twin, twin, *real[2:])
    first = await start_initial(store, 1)
    stats = await sc.finish_success(
        store,
        await held(store, first),
        result_of(first_txs),
        now=at(2),
        raw_reply=b"<reply/>",
        coverage_start=date(2022, 5, 1),
        polls=0,
    )
    assert (stats.accounts, stats.transactions, stats.added) == (1, len(first_txs), len(first_txs))
    assert (stats.modified, stats.removed) == (0, 0)
    before = {t.id: t for t in await sc.transactions(store, "owner-1", IBAN)}
    assert len(before) == len(first_txs)

    window = date(2023, 5, 15)
    booked = replace(pending, booked_on=date(2023, 5, 23), status="DONE", title="Allegro zakupy",
                     balance=Decimal("259302.61"), labels=("shopping",))  # fmt: skip
    newest = (booked, *real[:2], twin, twin, *(t for t in real[3:] if t.transaction_on >= window))
    second = await start_initial(store, 2, now=at(3))
    stats = await sc.finish_success(
        store,
        await held(store, second),
        result_of(newest, balance="1.00"),
        now=at(4),
        raw_reply=None,
        coverage_start=window,
        polls=0,
    )
    assert (stats.added, stats.modified, stats.removed) == (0, 1, 1)
    after = await sc.transactions(store, "owner-1", IBAN)
    assert len(after) == len(first_txs) - 1
    by_title = {t.title: t for t in after}
    # The pending row booked: same local id, new values, not a duplicate.
    pending_id = next(i for i, t in before.items() if t.title == pending.title)
    assert by_title["Allegro zakupy"].id == pending_id
    assert by_title["Allegro zakupy"].status == "DONE"
    assert by_title["Allegro zakupy"].labels == ("shopping",)
    assert pending.title not in by_title
    # Vanished inside the window: gone. Identical pair: kept twice. Older rows: untouched.
    assert vanishing.title not in {t.title for t in after if t.transaction_on == date(2023, 5, 19)}
    assert sum(1 for t in after if t.title == twin.title and t.amount == twin.amount) == 2
    old_before = {i: t for i, t in before.items() if t.transaction_on < window}
    old_after = {t.id: t for t in after if t.transaction_on < window}
    assert old_after == old_before
    assert len(old_before) > 10
    # Newest first, with the account's currency and the latest details.
    assert [t.transaction_on for t in after] == sorted(
        (t.transaction_on for t in after), reverse=True
    )
    assert {t.currency_name for t in after} == {"PLN"}
    [account] = await sc.accounts(store, "owner-1")
    assert account["currencyBalance"] == Decimal("1.00")
    assert account["updatedAt"] == at(4)
    assert await sc.owner_details(store, "owner-1") == [
        {"name": "Tadeusz Krajowy", "kind": "CO_OWNER", "address": None},
        {"name": "Maria Sochacka", "kind": "OWNER", "address": "Stolarska 15/2 33-543 Jaworzno"},
    ]
    # A repeat of the same import changes nothing.
    third = await start_initial(store, 3, now=at(5))
    stats = await sc.finish_success(
        store,
        await held(store, third),
        result_of(newest, balance="1.00"),
        now=at(6),
        raw_reply=None,
        coverage_start=window,
        polls=0,
    )
    assert (stats.added, stats.modified, stats.removed) == (0, 0, 0)
    assert await sc.transactions(store, "owner-1", IBAN) == after

    succeeded = [
        e for e in await sc.list_events(store, after=0, limit=100) if e.type == "import.succeeded"
    ]
    assert [e.import_id for e in succeeded] == [first, second, third]
    assert succeeded[1].data == {
        "accounts": 1,
        "transactions": len(newest),
        "added": 0,
        "modified": 1,
        "removed": 1,
        "polls": 0,
        "durationSeconds": 60.0,
        "creditCards": 0,
        "partialAccounts": [],
        "skipped": 0,
    }
    record = await sc.get_import(store, second)
    assert record is not None
    assert (record.state, record.accounts, record.transactions) == (
        ImportState.SUCCESSFUL,
        1,
        len(newest),
    )
    with pytest.raises(ConflictError):
        await sc.finish_success(
            store,
            await held(store, second),
            result_of(newest),
            now=at(7),
            raw_reply=None,
            coverage_start=window,
            polls=0,
        )


@pytest.mark.anyio
async def test_change_sequence_and_tombstones(store: SqliteStore, tmp_path: Path) -> None:
    a = MoneyTransaction(date(2026, 4, 1), None, Decimal("1.00"), None, "a", status="PENDING")
    b = MoneyTransaction(date(2026, 4, 2), None, Decimal("2.00"), None, "b")
    first = await start_initial(store, 1)
    await sc.finish_success(
        store,
        await held(store, first),
        result_of((a, b)),
        now=at(1),
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=0,
    )
    second = await start_initial(store, 2)
    await sc.finish_success(
        store,
        await held(store, second),
        result_of((replace(a, status="DONE"),)),
        now=at(2),
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=0,
    )
    with closing(sqlite3.connect(tmp_path / "aisd.db")) as plain, plain:
        rows = plain.execute(
            "SELECT title, change_seq, first_import_id, last_import_id FROM transactions"
        ).fetchall()
        tombs = plain.execute("SELECT change_seq, import_id FROM transaction_tombstones").fetchall()
        counter = plain.execute("SELECT value FROM counters WHERE name = 'change_seq'").fetchone()
    assert rows == [("a", 3, first, second)]
    assert tombs == [(4, second)]
    assert counter == (4,)


@pytest.mark.anyio
async def test_token_bookkeeping_on_success(store: SqliteStore, tmp_path: Path) -> None:
    import_id = await start_initial(store)
    [record] = await sc.list_imports(store)
    await sc.finish_success(
        store,
        await held(store, import_id),
        result_of(()),
        now=at(9),
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=0,
    )
    with closing(sqlite3.connect(tmp_path / "aisd.db")) as plain, plain:
        assert plain.execute("SELECT last_import_at FROM tokens").fetchall() == [
            ("2026-05-01T08:09:00.000000Z",)
        ]
        assert plain.execute("SELECT token_id, iban FROM token_accounts").fetchall() == [
            (record.token_id, IBAN)
        ]


# -- reads, feed, files ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_imports_filters_and_order(store: SqliteStore) -> None:
    a = await store.submit_consent(consent(1), now=at(0), since=date(2025, 5, 1), expires_at=at(9))
    b = await store.submit_consent(
        consent(2, owner="owner-2"), now=at(1), since=date(2025, 5, 1), expires_at=at(9)
    )
    assert a.token_id is not None
    r = await store.queue_refresh(a.token_id, now=at(2), since=date(2026, 1, 1))
    assert isinstance(r, str)
    assert [x.import_id for x in await sc.list_imports(store)] == [r, b.import_id, a.import_id]
    assert [x.import_id for x in await sc.list_imports(store, owner_external_id="owner-1")] == [
        r,
        a.import_id,
    ]
    assert [x.import_id for x in await sc.list_imports(store, kind=ImportKind.REFRESH)] == [r]
    assert [x.import_id for x in await sc.list_imports(store, token_id=b.token_id)] == [b.import_id]
    assert [x.import_id for x in await sc.list_imports(store, limit=1)] == [r]
    assert await sc.list_imports(store, state=ImportState.RUNNING) == []
    record = await sc.get_import(store, r)
    assert record is not None
    assert (record.kind, record.state, record.since, record.owner_external_id) == (
        ImportKind.REFRESH,
        ImportState.QUEUED,
        date(2026, 1, 1),
        "owner-1",
    )
    assert await sc.get_import(store, "imp_nope") is None


@pytest.mark.anyio
async def test_event_ids_ascend_without_gaps_across_failures(store: SqliteStore) -> None:
    ids = await sc.append_events(
        store,
        [NewEvent("token.expiring", "owner-1", data={"days": 14}), NewEvent("quota.deferred")],
        now=T0,
    )
    assert ids == [1, 2]
    import_id = await start_initial(store)
    with pytest.raises(NotFoundError):
        await sc.finish_failure(
            store, await held(store, "imp_nope"), CommandFailure("X", "y"), now=at(1)
        )
    await sc.finish_success(
        store,
        await held(store, import_id),
        result_of(()),
        now=at(1),
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=0,
    )
    with pytest.raises(ConflictError):
        await sc.finish_success(
            store,
            await held(store, import_id),
            result_of(()),
            now=at(2),
            raw_reply=None,
            coverage_start=date(2026, 1, 1),
            polls=0,
        )
    more = await sc.append_events(store, [NewEvent("token.expired")], now=at(3))
    events = await sc.list_events(store, after=0, limit=1000)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert more == [len(events)]
    assert [e.type for e in events] == [
        "token.expiring",
        "quota.deferred",
        "consent.received",
        "import.started",
        "import.succeeded",
        "token.expired",
    ]
    assert events[0].data == {"days": 14}
    assert [e.id for e in await sc.list_events(store, after=2, limit=2)] == [3, 4]


@pytest.mark.anyio
async def test_database_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "aisd.db"
    async with open_store(path) as store:
        await start_initial(store)
        await store.ping()
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE((tmp_path / f"aisd.db{suffix}").stat().st_mode)
            assert mode == 0o600, suffix


@pytest.mark.anyio
async def test_awaitable_form_and_reopen_keeps_data(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "x.db")
    try:
        out = await store.submit_consent(
            consent(), now=T0, since=date(2025, 5, 1), expires_at=at(1)
        )
    finally:
        await store.close()
    async with open_store(tmp_path / "x.db") as again:
        record = await sc.get_import(again, out.import_id)
        assert record is not None
        assert record.created_at == T0


@pytest.mark.anyio
async def test_replay_rebuilds_the_same_merged_data(store: SqliteStore, fixtures_dir: Path) -> None:
    real = fixture_transactions(fixtures_dir)
    imports = [
        (real, date(2022, 5, 1)),
        (real[:10], date(2023, 5, 1)),
        ((replace(real[0], labels=("x",)), *real[1:5]), date(2023, 5, 15)),
    ]
    finished: list[str] = []
    for n, (txs, cov) in enumerate(imports, start=1):
        import_id = await start_initial(store, n, now=at(n))
        raw = gzip.compress(f"<reply n='{n}'/>".encode())
        await sc.finish_success(
            store,
            await held(store, import_id),
            result_of(txs),
            now=at(n + 0.5),
            raw_reply=raw,
            coverage_start=cov,
            polls=0,
        )
        finished.append(import_id)
    merged = await sc.transactions(store, "owner-1", IBAN)
    assert await sc.replay_owners(store) == ["owner-1"]
    replies = await sc.raw_replies(store, "owner-1")
    assert [(i, c) for i, c, _ in replies] == [
        (i, c) for i, (_, c) in zip(finished, imports, strict=True)
    ]
    assert gzip.decompress(replies[1][2]) == b"<reply n='2'/>"

    # Replay: the view rebuilt from the replies, merged over all dates, changes nothing.
    rebuilt_view = rebuild((result_of(txs), cov) for txs, cov in imports)
    stats = await store.replay_result(finished[-1], rebuilt_view, coverage_start=date.min)
    assert (stats.added, stats.modified, stats.removed) == (0, 0, 0)
    assert await sc.transactions(store, "owner-1", IBAN) == merged  # same rows, same ids
    assert len(await sc.list_events(store, after=0, limit=100)) == 3 * 3  # replay emits nothing

    assert await sc.purge_raw_replies(store, older_than=at(2.6)) == 2
    assert [i for i, _, _ in await sc.raw_replies(store, "owner-1")] == [finished[2]]


@pytest.mark.anyio
async def test_final_poll_count_is_kept(store: SqliteStore) -> None:
    import_id = await start_initial(store)
    await sc.finish_success(
        store,
        await held(store, import_id),
        result_of(()),
        now=at(1),
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=7,
    )
    record = await sc.get_import(store, import_id)
    assert record is not None
    assert record.polls == 7
    failing = await start_initial(store, 2)
    await sc.finish_failure(
        store, await held(store, failing), CommandFailure("Fatal", "boom"), now=at(2), polls=3
    )
    record = await sc.get_import(store, failing)
    assert record is not None
    assert record.polls == 3
    [_, event] = [
        e
        for e in await sc.list_events(store, after=0, limit=50)
        if e.type.startswith("import.") and e.type != "import.started"
    ]
    assert event.data["polls"] == 3


@pytest.mark.anyio
async def test_token_reauth_required_fails_import_and_flags_token_once(store: SqliteStore) -> None:
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    assert out.token_id is not None
    r1 = await store.queue_refresh(out.token_id, now=at(1), since=date(2026, 2, 1))
    assert isinstance(r1, str)
    # Two open imports of the token: the refresh and the consent's own.
    r2 = out.import_id
    dead = CommandFailure("InvalidMultipleAccessId", "Multiple access id is invalid.")
    reauth = TokenOutcome(reauth_required=True)
    await sc.finish_failure(store, await held(store, r1), dead, now=at(2), token=reauth)
    await sc.finish_failure(store, await held(store, r2), dead, now=at(3), token=reauth)
    assert await sc.token_state(store, out.token_id) == TokenState.REAUTH_REQUIRED
    events = await sc.list_events(store, after=1, limit=10)
    assert [(e.type, e.import_id) for e in events] == [
        ("import.failed", r1),
        ("token.reauth_required", r1),
        ("import.failed", r2),
    ]
    assert events[1].token_id == out.token_id
    assert events[1].data == {"errorName": "InvalidMultipleAccessId"}
    record = await sc.get_import(store, r1)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "InvalidMultipleAccessId"
    assert await sc.last_event_id(store) == 4


@pytest.mark.anyio
async def test_upstream_quota_exceeded_fails_import_and_records_refusal(
    store: SqliteStore, tmp_path: Path
) -> None:
    assert await sc.last_event_id(store) == 0
    out = await store.submit_consent(consent(), now=T0, since=date(2025, 5, 1), expires_at=at(9))
    assert out.token_id is not None
    refresh = await store.queue_refresh(out.token_id, now=at(1), since=date(2026, 2, 1))
    assert isinstance(refresh, str)
    refused = CommandFailure("MultipleAccessLimitExceeded", ACCESS_LIMIT_MESSAGE)
    refresh_claim = await held(store, refresh)
    await sc.finish_failure(
        store, refresh_claim, refused, now=at(2), token=TokenOutcome(deferred_until=at(62))
    )
    record = await sc.get_import(store, refresh)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "MultipleAccessLimitExceeded"
    assert await sc.token_state(store, out.token_id) == TokenState.ACTIVE
    with closing(sqlite3.connect(tmp_path / "aisd.db")) as plain:
        assert plain.execute("SELECT quota_refused_at FROM tokens").fetchall() == [
            ("2026-05-01T08:02:00.000000Z",)
        ]
    # The planner defers it to the given time, at the next tick, without counting a failure.
    [token] = await store.list_tokens(token_ids=[out.token_id])
    assert (token.upstream_deferred_until, token.next_refresh_at, token.failures) == (
        at(62),
        at(2),
        0,
    )
    with pytest.raises(ConflictError):
        await sc.finish_failure(
            store, refresh_claim, refused, now=at(3), token=TokenOutcome(deferred_until=at(9))
        )
