"""The SQLite store's token and planner methods against a real file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aisd.kontomatik._models import Account, CommandFailure, ImportResult
from aisd.phases import Step
from aisd.store import (
    AccessKind,
    ConflictError,
    ConsentIn,
    ImportKind,
    ImportState,
    LedgerEntry,
    NewEvent,
    NotFoundError,
    SqliteStore,
    StepWrite,
    TokenRecord,
    TokenState,
    open_store,
)
from aisd.store.sqlite import migrate
from aisd.store.sqlite._queries import QUERIES
from tests import store_calls as sc
from tests.integration.steps_helpers import held, queued, to_polling
from tests.store_calls import TokenOutcome

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
IBAN_1 = "PL69137013140000049678278112"
IBAN_2 = "PL27114020040000300201355387"
IBAN_3 = "PL61109010140000071219812874"
MAID = "maid-SECRET-abcdef"
DAYS = (14, 7, 3, 1)
FAR = T0 + timedelta(days=180)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


def plain(tmp_path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(tmp_path / "aisd.db"))


async def new_token(
    store: SqliteStore,
    n: int,
    *,
    owner: str = "owner-1",
    now: datetime = T0,
    expires_at: datetime = FAR,
) -> tuple[str, str]:
    """A consent with a token; returns (token id, initial import id)."""
    out = await store.submit_consent(
        ConsentIn(owner, f"session-{n}", f"sig-SECRET-{n}", f"{MAID}-{n}", "KontoBank"),
        now=now,
        since=date(2025, 5, 1),
        expires_at=expires_at,
    )
    assert out.token_id is not None
    return out.token_id, out.import_id


def result(*ibans: str) -> ImportResult:
    return ImportResult(accounts=tuple(Account(i, "Konto", "PLN", None, None) for i in ibans))


async def succeed(store: SqliteStore, import_id: str, now: datetime, *ibans: str) -> None:
    await sc.finish_success(
        store,
        await to_polling(store, import_id, now=now),
        result(*ibans),
        now=now,
        raw_reply=None,
        coverage_start=date(2026, 1, 1),
        polls=1,
    )


async def token(store: SqliteStore, token_id: str) -> TokenRecord:
    [record] = await store.list_tokens(token_ids=[token_id])
    return record


async def events(store: SqliteStore, after: int = 0) -> list[tuple[str, str | None, Any]]:
    return [
        (e.type, e.token_id, e.data) for e in await sc.list_events(store, after=after, limit=500)
    ]


async def last_event(store: SqliteStore) -> int:
    return await sc.last_event_id(store)


def query_plan(tmp_path: Path, name: str, params: dict[str, Any]) -> str:
    with plain(tmp_path) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + QUERIES[name], params).fetchall()
    return "\n".join(row[3] for row in rows)


# -- listing -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_new_token_is_due_at_once_and_lists_without_its_secret(
    store: SqliteStore,
) -> None:
    a, _ = await new_token(store, 1, now=at(0))
    b, _ = await new_token(store, 2, owner="owner-2", now=at(1))
    record = await token(store, a)
    assert record == TokenRecord(
        token_id=a,
        owner_external_id="owner-1",
        state=TokenState.ACTIVE,
        created_at=at(0),
        expires_at=FAR,
        accounts=frozenset(),
        last_import_at=None,
        last_refresh_at=None,
        next_refresh_at=at(0),
        plan_reason=None,
        failures=0,
        upstream_deferred_until=None,
        refresh_until=None,
        max_imports=None,
        imports_done=0,
        warned_days=(),
    )
    assert "SECRET" not in repr(await store.list_tokens())
    assert [t.token_id for t in await store.list_tokens()] == [a, b]
    assert [t.token_id for t in await store.list_tokens(owner_external_id="owner-2")] == [b]
    assert await store.list_tokens(state=TokenState.REVOKED) == []
    assert [t.token_id for t in await store.list_tokens(token_ids=[b, "tok_nope"])] == [b]
    assert await store.list_tokens(token_ids=[a], owner_external_id="owner-2") == []
    assert await store.list_tokens(token_ids=[]) == []


# -- due tokens and plans ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_due_tokens_earliest_first_without_open_refreshes(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1)
    b, _ = await new_token(store, 2)
    c, _ = await new_token(store, 3)
    await sc.set_plan(store, a, at=at(30), reason="scheduled", now=at(0))
    await sc.set_plan(store, b, at=at(10), reason="scheduled", now=at(0))
    await sc.set_plan(store, c, at=None, reason="ended", now=at(0))
    assert await sc.due_tokens(store, now=at(9), limit=10) == []
    assert await sc.next_refresh_due(store) == at(10)
    assert [t.token_id for t in await sc.due_tokens(store, now=at(30), limit=10)] == [b, a]
    assert [t.token_id for t in await sc.due_tokens(store, now=at(30), limit=1)] == [b]
    [record] = await sc.due_tokens(store, now=at(10), limit=10)
    assert (record.next_refresh_at, record.plan_reason) == (at(10), "scheduled")
    # An open refresh (queued, then running) keeps a token out even with a time set.
    refresh = await store.queue_refresh(b, now=at(11), since=date(2026, 4, 1))
    assert isinstance(refresh, str)
    assert [t.token_id for t in await sc.due_tokens(store, now=at(30), limit=10)] == [a]
    await sc.begin_access(
        store, await held(store, refresh), AccessKind.REUSE, now=at(12), token_id=b
    )
    assert [t.token_id for t in await sc.due_tokens(store, now=at(30), limit=10)] == [a]
    await sc.finish_failure(
        store, await held(store, refresh), CommandFailure("Fatal", "boom"), now=at(13)
    )
    assert [t.token_id for t in await sc.due_tokens(store, now=at(30), limit=10)] == [b, a]
    await sc.end_token(store, a, TokenState.REVOKED, now=at(14), reason="operator")
    await sc.end_token(store, b, TokenState.REVOKED, now=at(14), reason="operator")
    assert await sc.due_tokens(store, now=at(30), limit=10) == []
    assert await sc.next_refresh_due(store) is None


def test_due_tokens_and_warnings_are_index_range_scans(tmp_path: Path) -> None:
    migrate(tmp_path / "aisd.db")
    due = query_plan(tmp_path, "due_token_records", {"now": "x", "limit": 5})
    assert "SEARCH t USING INDEX tokens_due (state=? AND next_refresh_at<?)" in due
    assert "SCAN t" not in due
    assert "TEMP B-TREE" not in due  # served in index order, not sorted afterwards
    warn = query_plan(tmp_path, "warning_candidates", {"now": "x"})
    assert "SEARCH t USING INDEX tokens_warning (state=? AND next_warning_at<?)" in warn
    assert "SCAN t" not in warn
    expiry = query_plan(tmp_path, "tokens_past_expiry", {"now": "x"})
    assert "SEARCH t USING INDEX tokens_expiry (state=? AND expires_at<?)" in expiry
    by_id = query_plan(
        tmp_path,
        "token_records_by_ids",
        {"token_ids": "[]", "owner_external_id": None, "state": None},
    )
    assert "SCAN t" not in by_id


def test_the_ticks_set_based_writes_find_tokens_by_their_key(tmp_path: Path) -> None:
    migrate(tmp_path / "aisd.db")
    queue = query_plan(tmp_path, "queue_refreshes", {"refreshes": "[]", "now": "x"})
    assert "SEARCH t USING INDEX sqlite_autoindex_tokens_1 (id=?)" in queue
    assert "SCAN t" not in queue
    clear = query_plan(tmp_path, "clear_next_refresh_of_tokens", {"token_ids": "[]"})
    assert "SEARCH tokens USING INDEX sqlite_autoindex_tokens_1 (id=?)" in clear
    assert "SCAN tokens" not in clear


@pytest.mark.anyio
async def test_set_plan_stores_time_reason_and_event_once(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1)
    before = await last_event(store)
    deferred = NewEvent("quota.deferred", "owner-1", a, data={"reason": "quota"})
    await sc.set_plan(store, a, at=at(60), reason="quota", now=at(1), event=deferred)
    record = await token(store, a)
    assert (record.next_refresh_at, record.plan_reason) == (at(60), "quota")
    assert await events(store, before) == [("quota.deferred", a, {"reason": "quota"})]
    await sc.set_plan(store, a, at=None, reason="ended", now=at(2))
    record = await token(store, a)
    assert (record.next_refresh_at, record.plan_reason) == (None, "ended")
    assert await last_event(store) == before + 1
    with pytest.raises(NotFoundError):
        await sc.set_plan(store, "tok_nope", at=at(3), reason="scheduled", now=at(3))
    # A final token keeps no plan, and no event is told about it.
    await sc.end_token(store, a, TokenState.REVOKED, now=at(4), reason="operator")
    after_end = await last_event(store)
    await sc.set_plan(store, a, at=at(90), reason="quota", now=at(5), event=deferred)
    assert (await token(store, a)).next_refresh_at is None
    assert await last_event(store) == after_end


@pytest.mark.anyio
async def test_queue_planned_refresh_once_per_open_refresh(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1)
    import_id = await store.queue_refresh(a, now=at(5), since=date(2026, 4, 1))
    assert isinstance(import_id, str)
    record = await sc.get_import(store, import_id)
    assert record is not None
    assert (record.kind, record.state, record.since, record.token_id) == (
        ImportKind.REFRESH,
        ImportState.QUEUED,
        date(2026, 4, 1),
        a,
    )
    assert (await token(store, a)).next_refresh_at is None
    assert await sc.next_refresh_due(store) is None
    assert await store.queue_refresh(a, now=at(6), since=date(2026, 4, 1)) is None
    assert len(await sc.list_imports(store, token_id=a, kind=ImportKind.REFRESH)) == 1
    with pytest.raises(NotFoundError):
        await store.queue_refresh("tok_nope", now=at(6), since=date(2026, 4, 1))
    b, _ = await new_token(store, 2)
    await sc.end_token(store, b, TokenState.REVOKED, now=at(7), reason="operator")
    with pytest.raises(ConflictError, match="revoked"):
        await store.queue_refresh(b, now=at(8), since=date(2026, 4, 1))
    assert await sc.list_imports(store, token_id=b, kind=ImportKind.REFRESH) == []


# -- counters ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_success_and_failure_counters(store: SqliteStore) -> None:
    a, initial = await new_token(store, 1)
    await succeed(store, initial, at(5), IBAN_1)
    record = await token(store, a)
    assert (record.imports_done, record.failures, record.last_import_at) == (1, 0, at(5))
    assert (record.next_refresh_at, record.accounts) == (at(5), frozenset({IBAN_1}))
    r1 = await store.queue_refresh(a, now=at(10), since=date(2026, 4, 1))
    assert isinstance(r1, str)
    await sc.finish_failure(
        store, await held(store, r1), CommandFailure("Fatal", "boom"), now=at(11)
    )
    r2 = await store.queue_refresh(a, now=at(20), since=date(2026, 4, 1))
    assert isinstance(r2, str)
    await sc.finish_failure(
        store, await held(store, r2), CommandFailure("Fatal", "boom"), now=at(21)
    )
    record = await token(store, a)
    assert (record.failures, record.next_refresh_at, record.imports_done) == (2, at(21), 1)
    r3 = await store.queue_refresh(a, now=at(30), since=date(2026, 4, 1))
    assert isinstance(r3, str)
    refused = CommandFailure("MultipleAccessLimitExceeded", "Upstream refused the access.")
    await sc.finish_failure(
        store,
        await held(store, r3),
        refused,
        now=at(31),
        token=TokenOutcome(deferred_until=at(400)),
    )
    record = await token(store, a)
    assert (record.failures, record.next_refresh_at, record.upstream_deferred_until) == (
        2,
        at(31),
        at(400),
    )
    r4 = await store.queue_refresh(a, now=at(40), since=date(2026, 4, 1))
    assert isinstance(r4, str)
    await succeed(store, r4, at(45), IBAN_1, IBAN_2)
    record = await token(store, a)
    assert (record.failures, record.upstream_deferred_until, record.imports_done) == (0, None, 2)
    assert (record.last_import_at, record.next_refresh_at) == (at(45), at(45))
    assert record.accounts == frozenset({IBAN_1, IBAN_2})
    # A failed first import counts too, so the first refresh comes after a short back-off.
    b, initial_b = await new_token(store, 2)
    await sc.finish_failure(
        store, await held(store, initial_b), CommandFailure("Fatal", "boom"), now=at(50)
    )
    record = await token(store, b)
    assert (record.failures, record.next_refresh_at) == (1, at(50))


@pytest.mark.anyio
async def test_reauth_required_ends_the_token_and_drops_its_secret(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1)
    refresh = await store.queue_refresh(a, now=at(1), since=date(2026, 4, 1))
    assert isinstance(refresh, str)
    dead = CommandFailure("InvalidMultipleAccessId", "Multiple access id is invalid.")
    reauth = TokenOutcome(reauth_required=True)
    await sc.finish_failure(store, await held(store, refresh), dead, now=at(2), token=reauth)
    record = await token(store, a)
    assert record.state == TokenState.REAUTH_REQUIRED
    assert (record.failures, record.next_refresh_at) == (1, None)
    assert (record.state_reason, record.ended_at) == ("InvalidMultipleAccessId", at(2))
    assert await store.multiple_access_id(a) is None
    assert await sc.next_refresh_due(store) is None


@pytest.mark.anyio
async def test_last_refresh_is_the_newest_reuse_that_may_have_been_sent(
    store: SqliteStore,
) -> None:
    a, initial = await new_token(store, 1)
    await sc.begin_access(
        store, await held(store, initial), AccessKind.DEFAULT_IMPORT, now=at(1), token_id=a
    )
    assert (await token(store, a)).last_refresh_at is None
    first = await sc.record_access(store, AccessKind.REUSE, now=at(2), token_id=a)
    second = await sc.record_access(store, AccessKind.REUSE, now=at(3), token_id=a)
    assert (await token(store, a)).last_refresh_at == at(3)
    # A clock stepping back never moves it backwards.
    third = await sc.record_access(store, AccessKind.REUSE, now=at(2.5), token_id=a)
    assert (await token(store, a)).last_refresh_at == at(3)
    await sc.record_access_outcome(store, second, outcome="not_sent")
    assert (await token(store, a)).last_refresh_at == at(2.5)
    await sc.record_access_outcome(store, third, outcome="not_sent")
    await sc.record_access_outcome(store, first, outcome="error", error_name="Fatal")
    assert (await token(store, a)).last_refresh_at == at(2)
    await sc.record_access_outcome(store, first, outcome="not_sent")
    assert (await token(store, a)).last_refresh_at is None


# -- the reuse ledger --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reuse_ledger_covers_tokens_sharing_an_account(store: SqliteStore) -> None:
    a, ia = await new_token(store, 1, owner="owner-a")
    b, ib = await new_token(store, 2, owner="owner-b")
    c, ic = await new_token(store, 3, owner="owner-c")
    d, _ = await new_token(store, 4, owner="owner-d")
    await succeed(store, ia, at(1), IBAN_1)
    await succeed(store, ib, at(1), IBAN_1, IBAN_3)  # shares IBAN_1 with a
    await succeed(store, ic, at(1), IBAN_2)  # shares nothing with a

    async def reuse(token_id: str, minutes: float, outcome: str) -> None:
        access = await sc.record_access(store, AccessKind.REUSE, now=at(minutes), token_id=token_id)
        await sc.record_access_outcome(store, access, outcome=outcome)

    await reuse(a, 5, "ok")  # before the horizon
    await reuse(a, 20, "ok")
    await reuse(b, 30, "error")
    await reuse(b, 35, "not_sent")
    await reuse(c, 25, "ok")
    await sc.record_access(store, AccessKind.REUSE, now=at(40), token_id=b)  # in flight
    await sc.record_access(store, AccessKind.DEFAULT_IMPORT, now=at(41), token_id=a)
    ledger, accounts_of = await store.reuse_ledger([a], since=at(10))
    assert ledger == [LedgerEntry(a, at(20)), LedgerEntry(b, at(30)), LedgerEntry(b, at(40))]
    assert accounts_of == {a: frozenset({IBAN_1}), b: frozenset({IBAN_1, IBAN_3})}
    ledger, accounts_of = await store.reuse_ledger([c, d], since=at(10))
    assert ledger == [LedgerEntry(c, at(25))]
    assert accounts_of == {c: frozenset({IBAN_2}), d: frozenset()}
    ledger, accounts_of = await store.reuse_ledger([a, b], since=at(20))
    assert [e.at for e in ledger] == [at(20), at(30), at(40)]
    assert set(accounts_of) == {a, b}
    assert await store.reuse_ledger([], since=at(0)) == ([], {})


# -- expiry and revocation ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_expire_tokens_fails_queued_refreshes_once(
    store: SqliteStore, tmp_path: Path
) -> None:
    a, initial_a = await new_token(store, 1, expires_at=at(60))
    b, _ = await new_token(store, 2, expires_at=at(120))
    c, _ = await new_token(store, 3, expires_at=at(60))
    await sc.end_token(store, c, TokenState.REVOKED, now=at(1), reason="operator")
    queued = await store.queue_refresh(a, now=at(2), since=date(2026, 4, 1))
    assert isinstance(queued, str)
    # One open refresh per token: the import in flight is the consent's own.
    reusing = initial_a
    await sc.begin_access(
        store, await held(store, reusing), AccessKind.DEFAULT_IMPORT, now=at(3), token_id=a
    )
    before = await last_event(store)
    assert await sc.expire_tokens(store, now=at(59)) == []
    assert await sc.expire_tokens(store, now=at(60)) == [a]
    assert await sc.expire_tokens(store, now=at(61)) == []
    record = await token(store, a)
    assert (record.state, record.state_reason, record.ended_at) == (
        TokenState.EXPIRED,
        "expired",
        at(60),
    )
    assert record.next_refresh_at is None
    assert await store.multiple_access_id(a) is None
    assert (await token(store, b)).state == TokenState.ACTIVE
    assert (await token(store, c)).state == TokenState.REVOKED  # final stays final
    failed = await sc.get_import(store, queued)
    assert failed is not None
    assert failed.state == ImportState.FAILED
    assert failed.error is not None
    assert failed.error.name == "TokenExpired"
    running = await sc.get_import(store, reusing)
    assert running is not None
    assert running.state == ImportState.RUNNING  # in flight: left to finish
    feed = await events(store, before)
    assert [(kind, token_id) for kind, token_id, _ in feed] == [
        ("token.expired", a),
        ("import.failed", a),
    ]
    assert feed[0][2] == {"expiresAt": "2026-05-01T09:00:00Z"}
    with plain(tmp_path) as conn:
        assert conn.execute("SELECT data FROM events WHERE data LIKE '%SECRET%'").fetchall() == []


@pytest.mark.anyio
async def test_end_token_revokes_once_and_fails_queued_refreshes(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1)
    queued = await store.queue_refresh(a, now=at(1), since=date(2026, 4, 1))
    assert isinstance(queued, str)
    with pytest.raises(ValueError, match="final"):
        await sc.end_token(store, a, TokenState.ACTIVE, now=at(2), reason="x")
    with pytest.raises(NotFoundError):
        await sc.end_token(store, "tok_nope", TokenState.REVOKED, now=at(2), reason="x")
    before = await last_event(store)
    assert await sc.end_token(store, a, TokenState.REVOKED, now=at(2), reason="maxImports reached")
    assert not await sc.end_token(store, a, TokenState.REVOKED, now=at(3), reason="again")
    assert await events(store, before) == [
        ("token.revoked", a, {"reason": "maxImports reached"}),
        (
            "import.failed",
            a,
            {
                "errorName": "TokenRevoked",
                "errorMessage": "The token is revoked; the refresh was not started.",
                "polls": 0,
            },
        ),
    ]
    record = await token(store, a)
    assert (record.state, record.state_reason, record.ended_at) == (
        TokenState.REVOKED,
        "maxImports reached",
        at(2),
    )
    assert await store.multiple_access_id(a) is None
    # An import failed meanwhile can no longer be sent.
    with pytest.raises(ConflictError, match="already ended"):
        await sc.begin_access(
            store, await held(store, queued), AccessKind.REUSE, now=at(4), token_id=a
        )


@pytest.mark.anyio
async def test_next_queued_hands_out_refreshes_of_ended_tokens_without_the_secret(
    store: SqliteStore,
) -> None:
    a, initial = await new_token(store, 1)
    await succeed(store, initial, at(1), IBAN_1)
    refresh = await store.queue_refresh(a, now=at(2), since=date(2026, 4, 1))
    assert isinstance(refresh, str)
    [job] = await queued(store, now=at(3), limit=5)
    assert job.multiple_access_id == f"{MAID}-1"
    claim = await held(store, refresh)
    await sc.begin_access(store, claim, AccessKind.REUSE, now=at(3), token_id=a)
    await sc.end_token(store, a, TokenState.REVOKED, now=at(4), reason="operator")
    # The Reuse reply was lost: back to the queue, where the pipeline fails it as unavailable.
    await store.advance(claim, StepWrite(Step.REQUEUE, not_before=at(5), attempts=1), now=at(4))
    [job] = await queued(store, now=at(5), limit=5)
    assert (job.import_id, job.token_id, job.multiple_access_id) == (refresh, a, None)


# -- expiry warnings ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_warnings_are_raised_once_per_threshold(store: SqliteStore, tmp_path: Path) -> None:
    expires = T0 + timedelta(days=20)
    a, _ = await new_token(store, 1, expires_at=expires)

    def next_warning() -> str | None:
        with plain(tmp_path) as conn:
            [(value,)] = conn.execute("SELECT next_warning_at FROM tokens").fetchall()
        return str(value) if value is not None else None

    assert next_warning() == "2026-05-01T08:00:00.000000Z"  # evaluated at the first tick
    assert await sc.warnings_due(store, now=T0, days=DAYS) == []
    assert next_warning() == "2026-05-07T08:00:00.000000Z"  # expires - 14 days
    assert await sc.warnings_due(store, now=T0 + timedelta(days=6, minutes=-1), days=DAYS) == []
    [due] = await sc.warnings_due(store, now=T0 + timedelta(days=6, minutes=1), days=DAYS)
    assert (due.token_id, due.warned_days) == (a, ())
    before = await last_event(store)
    await sc.record_warning(store, a, 14, now=T0 + timedelta(days=6, minutes=1))
    await sc.record_warning(store, a, 14, now=T0 + timedelta(days=6, minutes=2))
    assert await events(store, before) == [
        ("token.expiring", a, {"daysBefore": 14, "expiresAt": "2026-05-21T08:00:00Z"})
    ]
    assert (await token(store, a)).warned_days == (14,)
    assert await sc.warnings_due(store, now=T0 + timedelta(days=6, minutes=3), days=DAYS) == []
    assert next_warning() == "2026-05-14T08:00:00.000000Z"  # expires - 7 days
    for day in (7, 3, 1):
        await sc.record_warning(store, a, day, now=T0 + timedelta(days=19, hours=12))
    assert await sc.warnings_due(store, now=T0 + timedelta(days=19, hours=12), days=DAYS) == []
    assert next_warning() is None
    assert (await token(store, a)).warned_days == (14, 7, 3, 1)
    with pytest.raises(NotFoundError):
        await sc.record_warning(store, "tok_nope", 1, now=T0)


@pytest.mark.anyio
async def test_thresholds_already_past_at_consent_are_due_at_once(store: SqliteStore) -> None:
    a, _ = await new_token(store, 1, expires_at=T0 + timedelta(days=5))
    b, _ = await new_token(store, 2, expires_at=T0 + timedelta(days=5))
    await sc.end_token(store, b, TokenState.REVOKED, now=at(1), reason="operator")
    [due] = await sc.warnings_due(store, now=at(1), days=DAYS)
    assert due.token_id == a
    for day in (14, 7):
        await sc.record_warning(store, a, day, now=at(1))
    before = await last_event(store)
    await sc.record_warning(store, b, 14, now=at(1))  # final: nothing to warn about
    assert await last_event(store) == before
    assert (await token(store, a)).warned_days == (14, 7)
    assert await sc.warnings_due(store, now=at(2), days=DAYS) == []


# -- migration ---------------------------------------------------------------------------------

TS = "2026-05-01T08:00:00.000000Z"
LATER = "2026-05-02T08:00:00.000000Z"
OLD_TOKENS = [
    "INSERT INTO owners (id, external_id, created_at) VALUES (1, 'owner-1', '2026-05-01')",
    "INSERT INTO tokens (id, owner_id, multiple_access_id, state, created_at, expires_at)"
    f" VALUES ('tok_active', 1, 'maid-SECRET-1', 'active', '{TS}', '2026-10-28T08:00:00.000000Z')",
    "INSERT INTO tokens (id, owner_id, multiple_access_id, state, created_at, expires_at,"
    f" state_changed_at) VALUES ('tok_dead', 1, 'maid-SECRET-2', 'reauth_required', '{TS}',"
    f" '2026-10-28T08:00:00.000000Z', '{LATER}')",
    "INSERT INTO imports (id, owner_id, token_id, kind, state, phase, since, created_at)"
    f" VALUES ('imp_1', 1, 'tok_active', 'initial', 'successful', 'done', '2025-05-01', '{TS}'),"
    f" ('imp_2', 1, 'tok_active', 'refresh', 'failed', 'done', '2026-04-01', '{LATER}')",
    f"INSERT INTO token_accounts VALUES ('tok_active', 'PL69137013140000049678278112', '{TS}')",
    "INSERT INTO accesses (kind, token_id, sent_at, outcome) VALUES"
    " ('reuse', 'tok_active', '2026-05-01T12:00:00.000000Z', 'ok'),"
    " ('reuse', 'tok_active', '2026-05-01T13:00:00.000000Z', 'not_sent'),"
    " ('default_import', 'tok_active', '2026-05-01T14:00:00.000000Z', 'ok')",
]


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.anyio
async def test_tokens_from_earlier_versions_get_planner_values(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "aisd.db"
    assert migrate(path, target=version) == version
    if version >= 1:
        with closing(sqlite3.connect(path)) as conn, conn:
            for statement in OLD_TOKENS:
                conn.execute(statement)
    async with open_store(path) as store:
        if version == 0:
            assert await store.list_tokens() == []
            assert await sc.due_tokens(store, now=T0, limit=10) == []
            return
        active, dead = await store.list_tokens(token_ids=["tok_active", "tok_dead"])
        assert active.token_id == "tok_active"
        assert (active.next_refresh_at, active.imports_done, active.failures) == (T0, 1, 0)
        assert active.last_refresh_at == T0 + timedelta(hours=4)
        assert active.accounts == frozenset({IBAN_1})
        assert await store.multiple_access_id("tok_active") == "maid-SECRET-1"
        assert [t.token_id for t in await sc.due_tokens(store, now=T0, limit=10)] == ["tok_active"]
        assert (dead.state, dead.state_reason, dead.next_refresh_at) == (
            TokenState.REAUTH_REQUIRED,
            "InvalidMultipleAccessId",
            None,
        )
        assert dead.ended_at == T0 + timedelta(days=1)
        assert await store.multiple_access_id("tok_dead") is None
        # Warnings of migrated tokens are looked at by the first tick.
        assert await sc.warnings_due(store, now=T0, days=DAYS) == []
        assert [t.token_id for t in await sc.warnings_due(store, now=FAR, days=DAYS)] == [
            "tok_active"
        ]
