"""The SQLite implementation of :class:`aisd.store.Store`.

Two aiosqlite connections: one writer, whose transactions an anyio lock serialises (each write
is one ``BEGIN IMMEDIATE`` ... ``COMMIT``), and one query-only reader, which in WAL mode never
waits for the writer and never sees uncommitted rows. Bulk work (the merge, compression) runs in
a worker thread and reaches SQLite as a few ``executemany`` batches, not per-row round trips.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import anyio
import anyio.to_thread

from aisd.clock import iso
from aisd.kontomatik._models import CommandFailure, ImportResult, Session
from aisd.merge import coverages
from aisd.store._health import StorageHealth
from aisd.store._records import (
    AccessKind,
    ConsentIn,
    ImportJob,
    ImportKind,
    ImportPhase,
    ImportState,
    MergeStats,
    NewEvent,
    StoredConsent,
    SubmitOutcome,
    TokenState,
)
from aisd.store.sqlite._codec import (
    date_in,
    dt_in,
    dt_out,
    json_in,
    opt_dt_out,
)
from aisd.store.sqlite._data import (
    AnalyticsMethods,
    BillingMethods,
    FeedMethods,
    MergeMethods,
    PrivacyMethods,
    RefusalMethods,
)
from aisd.store.sqlite._data_codec import owners_json, success_extras
from aisd.store.sqlite._data_core import one
from aisd.store.sqlite._errors import (
    ConflictError,
    NotFoundError,
    StorageUnavailable,
    StoreError,
    storage_failure,
)
from aisd.store.sqlite._ids import new_id
from aisd.store.sqlite._migrate import migrate
from aisd.store.sqlite._ops import OpsMethods
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._reads import ReadMethods
from aisd.store.sqlite._tokens import TokenMethods, insert_refresh

__all__ = ["SqliteStore", "open_store"]

_FINAL_STATES = (ImportState.SUCCESSFUL.value, ImportState.FAILED.value)


async def _returning_id(db: aiosqlite.Connection, name: str, params: Any) -> int:
    # fetchall, not fetchone: a RETURNING statement must run to completion before COMMIT.
    rows = list(await db.execute_fetchall(Q[name], params))
    if not rows:
        raise StoreError(f"{name} returned no row")
    return int(rows[0][0])


async def _update(db: aiosqlite.Connection, name: str, params: Mapping[str, Any]) -> None:
    async with db.execute(Q[name], params) as cursor:
        if cursor.rowcount != 1:
            raise NotFoundError(f"import {params.get('id')!s} not found")


def _job(row: sqlite3.Row) -> ImportJob:
    session = None
    if row["session_id"] is not None:
        session = Session(session_id=row["session_id"], signature=row["signature"])
    return ImportJob(
        import_id=row["id"],
        kind=ImportKind(row["kind"]),
        phase=ImportPhase(row["phase"]),
        owner_external_id=row["owner_external_id"] or "",
        token_id=row["token_id"],
        since=date.fromisoformat(row["since"]),
        created_at=dt_out(row["created_at"]),
        session=session,
        command_id=row["command_id"],
        polls=row["polls"],
        default_import_attempts=row["default_import_attempts"],
        attempts=row["attempts"],
        not_before=opt_dt_out(row["not_before"]),
        started_at=opt_dt_out(row["started_at"]),
        last_poll_at=opt_dt_out(row["last_poll_at"]),
        multiple_access_id=row["multiple_access_id"],
    )


class SqliteStore(
    ReadMethods,
    TokenMethods,
    FeedMethods,
    BillingMethods,
    PrivacyMethods,
    AnalyticsMethods,
    MergeMethods,
    RefusalMethods,
    OpsMethods,
):
    """The daemon's durable state in one SQLite file. Open it with :func:`open_store`."""

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = anyio.Lock()
        self.path = path
        self.health = StorageHealth()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for the write in progress, then close both connections."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._reader.close()
                await self._writer.close()

    async def ping(self) -> None:
        """A trivial read on the reader connection; raises if the database does not answer."""
        await self._reader.execute_fetchall(Q["ping"])

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._writer
            try:
                await db.execute(Q["begin_immediate"])
                try:
                    yield db
                    await db.execute(Q["commit"])
                except BaseException:
                    # Shielded: a cancelled caller must not leave the writer inside a transaction.
                    with anyio.CancelScope(shield=True):
                        if db.in_transaction:
                            await db.execute(Q["rollback"])
                    raise
            except Exception as exc:
                # A full or read-only disk is not a bug: callers tell their clients to retry.
                reason = storage_failure(exc)
                if reason is None:
                    raise
                self.health.failed(reason)
                raise StorageUnavailable(reason) from exc
            self.health.succeeded()

    async def _emit(
        self, db: aiosqlite.Connection, events: Sequence[NewEvent], now: datetime
    ) -> list[int]:
        ids: list[int] = []
        at = dt_in(now)
        for event in events:
            event_id = await _returning_id(
                db,
                "insert_event",
                {
                    "at": at,
                    "type": event.type,
                    "owner_external_id": event.owner_external_id,
                    "token_id": event.token_id,
                    "import_id": event.import_id,
                    "data": json_in(event.data),
                },
            )
            ids.append(event_id)
        return ids

    async def _import_row(self, db: aiosqlite.Connection, import_id: str) -> sqlite3.Row:
        row = await one(db, "import_row", {"id": import_id})
        if row is None:
            raise NotFoundError(f"import {import_id} not found")
        return row

    # -- intake --------------------------------------------------------------------------------

    async def submit_consent(
        self, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
    ) -> SubmitOutcome:
        """See :meth:`aisd.store.Store.submit_consent`."""
        ts = dt_in(now)
        async with self._transaction() as db:
            existing = await one(db, "consent_by_session", {"session_id": consent.session_id})
            if existing is not None:
                stored = StoredConsent(
                    owner_external_id=existing["owner_external_id"],
                    session_signature=existing["session_signature"],
                    multiple_access_id=existing["multiple_access_id"],
                    token_id=existing["token_id"],
                )
                return SubmitOutcome(
                    existing["import_id"], existing["token_id"], created=False, stored=stored
                )
            owner_id = await _returning_id(
                db, "upsert_owner", {"external_id": consent.owner_external_id, "now": ts}
            )
            refresh_until = date_in(consent.refresh_until)
            consent_id = await _returning_id(
                db,
                "insert_consent",
                {
                    "owner_id": owner_id,
                    "session_id": consent.session_id,
                    "target": consent.target,
                    "refresh_until": refresh_until,
                    "max_imports": consent.max_imports,
                    "now": ts,
                },
            )
            session_ref = await _returning_id(
                db,
                "upsert_session",
                {
                    "owner_id": owner_id,
                    "session_id": consent.session_id,
                    "signature": consent.session_signature,
                    "now": ts,
                },
            )
            token_id = None
            if consent.multiple_access_id is not None:
                token_id = new_id("tok_")
                await db.execute(
                    Q["insert_token"],
                    {
                        "id": token_id,
                        "owner_id": owner_id,
                        "consent_id": consent_id,
                        "multiple_access_id": consent.multiple_access_id,
                        "now": ts,
                        "expires_at": dt_in(expires_at),
                        "refresh_until": refresh_until,
                        "max_imports": consent.max_imports,
                    },
                )
            import_id = new_id("imp_")
            await db.execute(
                Q["insert_import"],
                {
                    "id": import_id,
                    "owner_id": owner_id,
                    "token_id": token_id,
                    "consent_id": consent_id,
                    "session_ref": session_ref,
                    "kind": ImportKind.INITIAL.value,
                    "since": since.isoformat(),
                    "now": ts,
                },
            )
            data: dict[str, Any] = {
                "target": consent.target,
                "since": since.isoformat(),
                "multipleAccess": token_id is not None,
            }
            if token_id is not None:
                data["expiresAt"] = dt_in(expires_at)
            event = NewEvent(
                "consent.received", consent.owner_external_id, token_id, import_id, data
            )
            await self._emit(db, [event], now)
        return SubmitOutcome(import_id, token_id, created=True)

    # -- the import pipeline -------------------------------------------------------------------

    async def queue_refresh(self, token_id: str, *, now: datetime, since: date) -> str:
        """See :meth:`aisd.store.Store.queue_refresh`.

        Raises:
            NotFoundError: the token is unknown.
            ConflictError: the token is not ``active``.
        """
        async with self._transaction() as db:
            token = await one(db, "token_owner", {"token_id": token_id})
            if token is None:
                raise NotFoundError(f"token {token_id} not found")
            if token["state"] != TokenState.ACTIVE.value:
                raise ConflictError(f"token {token_id} is {token['state']}")
            return await insert_refresh(
                db, token_id=token_id, owner_id=token["owner_id"], since=since, now=now
            )

    async def next_queued(self, *, now: datetime, limit: int) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.next_queued`."""
        rows = await self._reader.execute_fetchall(
            Q["queued_jobs"], {"now": dt_in(now), "limit": limit}
        )
        return [_job(row) for row in rows]

    async def in_flight(self) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.in_flight`."""
        return [_job(row) for row in await self._reader.execute_fetchall(Q["in_flight_jobs"])]

    async def record_access(
        self,
        kind: AccessKind,
        *,
        now: datetime,
        token_id: str | None,
        import_id: str | None,
        session_id: str | None = None,
    ) -> int:
        """See :meth:`aisd.store.Store.record_access`. Committed with ``synchronous=FULL``
        before it returns, so the row survives a crash or power loss right after the send."""
        ts = dt_in(now)
        async with self._transaction() as db:
            imp = None if import_id is None else await self._import_row(db, import_id)
            if imp is not None and imp["state"] in _FINAL_STATES:
                # Failed meanwhile (e.g. its token was revoked): nothing may be sent for it.
                raise ConflictError(f"import {import_id} already ended ({imp['state']})")
            access_id = await _returning_id(
                db,
                "insert_access",
                {
                    "kind": AccessKind(kind).value,
                    "token_id": token_id,
                    "import_id": import_id,
                    "session_id": session_id,
                    "now": ts,
                },
            )
            if imp is not None and kind == AccessKind.DEFAULT_IMPORT:
                await _update(db, "mark_starting", {"id": import_id, "now": ts})
                if imp["default_import_attempts"] == 0:
                    started = NewEvent(
                        "import.started",
                        imp["owner_external_id"],
                        imp["token_id"],
                        import_id,
                        {"kind": imp["kind"]},
                    )
                    await self._emit(db, [started], now)
            elif imp is not None and kind == AccessKind.REUSE:
                await _update(db, "mark_reusing", {"id": import_id, "now": ts})
            if kind == AccessKind.REUSE and token_id is not None:
                await db.execute(Q["token_reused"], {"id": token_id, "now": ts})
        return access_id

    async def record_access_outcome(
        self, access_id: int, *, outcome: str, error_name: str | None = None
    ) -> None:
        """See :meth:`aisd.store.Store.record_access_outcome`.

        Raises:
            NotFoundError: no ledger row has this id.
            sqlite3.IntegrityError: ``outcome`` is not ``ok``, ``error`` or ``not_sent``.
        """
        async with self._transaction() as db:
            params = {"id": access_id, "outcome": outcome, "error_name": error_name}
            async with db.execute(Q["set_access_outcome"], params) as cursor:
                if cursor.rowcount != 1:
                    raise NotFoundError(f"access {access_id} not found")
            if outcome == "not_sent":
                await db.execute(Q["token_reuse_not_sent"], {"id": access_id})

    async def record_session(self, import_id: str, session: Session, *, now: datetime) -> None:
        """See :meth:`aisd.store.Store.record_session`."""
        async with self._transaction() as db:
            imp = await self._import_row(db, import_id)
            session_ref = await _returning_id(
                db,
                "upsert_session",
                {
                    "owner_id": imp["owner_id"],
                    "session_id": session.session_id,
                    "signature": session.signature,
                    "now": dt_in(now),
                },
            )
            await _update(db, "attach_session", {"id": import_id, "session_ref": session_ref})

    async def record_command(
        self,
        import_id: str,
        command_id: str,
        *,
        now: datetime,
        next_poll_at: datetime,
        owner_echo: str | None = None,
    ) -> None:
        """See :meth:`aisd.store.Store.record_command`."""
        params = {
            "id": import_id,
            "command_id": command_id,
            "next_poll_at": dt_in(next_poll_at),
            "owner_echo": owner_echo,
        }
        async with self._transaction() as db:
            await _update(db, "set_command", params)

    async def record_poll(self, import_id: str, *, now: datetime, next_poll_at: datetime) -> None:
        """See :meth:`aisd.store.Store.record_poll`."""
        params = {"id": import_id, "now": dt_in(now), "next_poll_at": dt_in(next_poll_at)}
        async with self._transaction() as db:
            await _update(db, "add_poll", params)

    async def defer(
        self, import_id: str, *, not_before: datetime, attempts: int, phase: str | None = None
    ) -> None:
        """See :meth:`aisd.store.Store.defer`.

        Raises:
            ValueError: ``phase`` is not an :class:`ImportPhase`.
        """
        params = {
            "id": import_id,
            "not_before": dt_in(not_before),
            "attempts": attempts,
            "phase": None if phase is None else ImportPhase(phase).value,
        }
        async with self._transaction() as db:
            await _update(db, "defer_import", params)

    async def finish_success(
        self,
        import_id: str,
        result: ImportResult,
        *,
        now: datetime,
        raw_reply: bytes | None,
        coverage_start: date,
        polls: int,
    ) -> MergeStats:
        """See :meth:`aisd.store.Store.finish_success`. ``raw_reply`` is kept as given (the
        client hands it over gzip-compressed).

        Raises:
            NotFoundError: the import is unknown.
            ConflictError: the import has already ended.
        """
        ts = dt_in(now)
        async with self._transaction() as db:
            imp = await self._import_row(db, import_id)
            if imp["state"] in _FINAL_STATES:
                raise ConflictError(f"import {import_id} already ended ({imp['state']})")
            persons = owners_json(result.owners)
            await db.execute(
                Q["set_owner_persons"],
                {"id": imp["owner_id"], "persons": json_in(persons), "now": ts},
            )
            covered = coverages(result, coverage_start)
            stats = await self._merge(db, imp["owner_id"], import_id, result, covered, ts)
            if raw_reply is not None:
                await db.execute(
                    Q["insert_raw_reply"],
                    {
                        "import_id": import_id,
                        "coverage_start": coverage_start.isoformat(),
                        "reply": raw_reply,
                        "now": ts,
                    },
                )
            await _update(
                db,
                "finish_import_success",
                {
                    "id": import_id,
                    "now": ts,
                    "polls": polls,
                    "accounts": stats.accounts,
                    "transactions": stats.transactions,
                    "added": stats.added,
                    "modified": stats.modified,
                    "removed": stats.removed,
                },
            )
            token_id = imp["token_id"]
            if token_id is not None:
                await db.execute(Q["token_imported"], {"id": token_id, "now": ts})
                await db.executemany(
                    Q["insert_token_account"],
                    [{"token_id": token_id, "iban": a.iban, "now": ts} for a in result.accounts],
                )
            started = dt_out(imp["started_at"] or imp["created_at"])
            data = {
                "accounts": stats.accounts,
                "transactions": stats.transactions,
                "added": stats.added,
                "modified": stats.modified,
                "removed": stats.removed,
                "polls": polls,
                "durationSeconds": round((now - started).total_seconds(), 3),
                **success_extras(result),
            }
            event = NewEvent(
                "import.succeeded", imp["owner_external_id"], token_id, import_id, data
            )
            await self._emit(db, [event], now)
        return stats

    async def finish_failure(
        self, import_id: str, failure: CommandFailure, *, now: datetime, polls: int | None = None
    ) -> None:
        """See :meth:`aisd.store.Store.finish_failure`. A failed import of a token (a refresh,
        or the consent's first import) adds to its failure streak and has it re-planned at the
        next tick: after a failed first import, the first refresh comes after a short back-off
        instead of a whole refresh interval, since the integrator still has no data.

        Raises:
            NotFoundError: the import is unknown.
            ConflictError: the import has already ended.
        """
        async with self._transaction() as db:
            imp = await self._fail(db, import_id, failure, now=now, polls=polls)
            if imp["token_id"] is not None:
                params = {"id": imp["token_id"], "now": dt_in(now)}
                await db.execute(Q["token_refresh_failed"], params)

    async def token_reauth_required(
        self, token_id: str, import_id: str, failure: CommandFailure, *, now: datetime
    ) -> None:
        """See :meth:`aisd.store.Store.token_reauth_required`. ``token.reauth_required`` is
        appended only when the token was ``active``: a second import failing on the same dead
        token does not repeat it. The failure counts in the token's streak; its secret and its
        plan are dropped with the state."""
        ts = dt_in(now)
        async with self._transaction() as db:
            imp = await self._fail(db, import_id, failure, now=now, polls=None)
            params = {
                "id": token_id,
                "state": TokenState.REAUTH_REQUIRED.value,
                "reason": failure.name,
                "now": ts,
            }
            async with db.execute(Q["end_token"], params) as cursor:
                changed = cursor.rowcount == 1
            await db.execute(Q["token_refresh_failed"], {"id": token_id, "now": ts})
            if changed:
                data = {"errorName": failure.name}
                event = NewEvent(
                    "token.reauth_required", imp["owner_external_id"], token_id, import_id, data
                )
                await self._emit(db, [event], now)

    async def upstream_quota_exceeded(
        self, token_id: str, import_id: str, *, now: datetime, deferred_until: datetime
    ) -> None:
        """See :meth:`aisd.store.Store.upstream_quota_exceeded`. The token keeps its failure
        streak, records ``deferred_until`` and is re-planned at the next tick; the event
        ``quota.deferred`` says until when."""
        failure = CommandFailure(
            "MultipleAccessLimitExceeded",
            "Upstream refused the access: the bank account's rolling 24 h limit is used up.",
        )
        async with self._transaction() as db:
            imp = await self._fail(db, import_id, failure, now=now, polls=None)
            params = {"id": token_id, "now": dt_in(now), "deferred_until": dt_in(deferred_until)}
            await db.execute(Q["token_quota_refused"], params)
            data = {"reason": "upstream_limit", "nextPossibleAt": iso(deferred_until)}
            event = NewEvent("quota.deferred", imp["owner_external_id"], token_id, None, data)
            await self._emit(db, [event], now)

    async def _fail(
        self,
        db: aiosqlite.Connection,
        import_id: str,
        failure: CommandFailure,
        *,
        now: datetime,
        polls: int | None,
    ) -> sqlite3.Row:
        imp = await self._import_row(db, import_id)
        if imp["state"] in _FINAL_STATES:
            raise ConflictError(f"import {import_id} already ended ({imp['state']})")
        params = {
            "id": import_id,
            "now": dt_in(now),
            "polls": polls,
            "error_name": failure.name,
            "error_message": failure.message,
        }
        await _update(db, "finish_import_failure", params)
        data = {
            "errorName": failure.name,
            "errorMessage": failure.message,
            "polls": imp["polls"] if polls is None else polls,
        }
        event = NewEvent(
            "import.failed", imp["owner_external_id"], imp["token_id"], import_id, data
        )
        await self._emit(db, [event], now)
        return imp

    # -- raw replies and replay ----------------------------------------------------------------

    async def replay_owners(self) -> list[str]:
        """See :meth:`aisd.store.Store.replay_owners`."""
        rows = await self._reader.execute_fetchall(Q["replay_owners"])
        return [row["external_id"] for row in rows]

    async def raw_replies(self, owner_external_id: str) -> list[tuple[str, date, bytes]]:
        """See :meth:`aisd.store.Store.raw_replies`; replies are gzip-compressed."""
        rows = await self._reader.execute_fetchall(
            Q["list_raw_replies"], {"external_id": owner_external_id}
        )
        out: list[tuple[str, date, bytes]] = []
        for row in rows:
            coverage_start = date.fromisoformat(row["coverage_start"])
            out.append((row["import_id"], coverage_start, bytes(row["reply"])))
        return out

    async def replay_result(
        self, import_id: str, result: ImportResult, *, coverage_start: date
    ) -> MergeStats:
        """See :meth:`aisd.store.Store.replay_result`. Accounts' ``updatedAt`` becomes the
        import's end, as it was when the import first finished."""
        async with self._transaction() as db:
            imp = await self._import_row(db, import_id)
            ts = imp["finished_at"] or imp["created_at"]
            return await self._merge(db, imp["owner_id"], import_id, result, coverage_start, ts)

    async def purge_raw_replies(self, *, older_than: datetime) -> int:
        """See :meth:`aisd.store.Store.purge_raw_replies`."""
        params = {"older_than": dt_in(older_than)}
        async with self._transaction() as db:
            await db.execute(Q["purge_refused_replies"], params)
            async with db.execute(Q["purge_raw_replies"], params) as cur:
                return int(cur.rowcount)


def _create_private(path: Path) -> None:
    # 0600 from the first byte: SQLite gives -wal and -shm the main file's mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


async def _open(path: Path) -> SqliteStore:
    await anyio.to_thread.run_sync(_create_private, path)
    await anyio.to_thread.run_sync(migrate, path)
    writer = await aiosqlite.connect(path, isolation_level=None)
    try:
        await writer.executescript(Q["writer_pragmas"])
        writer.row_factory = sqlite3.Row
        reader = await aiosqlite.connect(path, isolation_level=None)
    except BaseException:
        await writer.close()
        raise
    try:
        await reader.executescript(Q["reader_pragmas"])
        reader.row_factory = sqlite3.Row
    except BaseException:
        await reader.close()
        await writer.close()
        raise
    return SqliteStore(writer, reader, path)


class _Opening:
    """Awaitable and async context manager: ``await open_store(p)`` or
    ``async with open_store(p) as store``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._store: SqliteStore | None = None

    def __await__(self) -> Generator[Any, None, SqliteStore]:
        return _open(self._path).__await__()

    async def __aenter__(self) -> SqliteStore:
        self._store = await _open(self._path)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()


def open_store(path: str | Path) -> _Opening:
    """Open (creating with mode 0600 and migrating as needed) the SQLite store at ``path``.

    Args:
        path: the database file.

    Returns:
        An awaitable giving a :class:`SqliteStore`, usable as ``async with`` too (closing the
        store on exit).

    Raises:
        DatabaseTooNewError: the file was migrated by a newer aisd.
    """
    return _Opening(Path(path))
