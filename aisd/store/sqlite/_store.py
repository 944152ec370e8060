"""The SQLite implementation of :class:`aisd.store.Store`.

Two aiosqlite connections: one writer, whose transactions an anyio lock serialises (each write
is one ``BEGIN IMMEDIATE`` ... ``COMMIT``), and one query-only reader, which in WAL mode never
waits for the writer and never sees uncommitted rows. The pipeline's and the intake's
transactions are each one plain function run on the writer's thread in one crossing
(:mod:`aisd.store.sqlite._sync`); those waiting at the same time are committed together, one
fsync for all (:mod:`aisd.store._coalesce`), and concurrent consents are written together as
one of them (:mod:`aisd.store.sqlite._intake`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import aiosqlite
import anyio
import anyio.to_thread

from aisd.kontomatik._models import ImportResult
from aisd.phases import Budget, Step
from aisd.store._coalesce import Coalescer
from aisd.store._health import StorageHealth
from aisd.store._records import (
    AccessKind,
    AccessStart,
    Claim,
    ConsentIn,
    ImportJob,
    MergeStats,
    NewEvent,
    QuotaAnswer,
    QuotaRule,
    StepAfter,
    StepWrite,
    SubmitOutcome,
    TickOutcome,
    TickPlanner,
    TokenState,
)
from aisd.store._requests import Fail, Lease, LeaseEnd, LeaseRenew, LeaseStart, LeaseWrite, Succeed
from aisd.store.sqlite import _steps as steps
from aisd.store.sqlite._checkpoint import Checkpointer
from aisd.store.sqlite._codec import dt_in, json_in
from aisd.store.sqlite._data import (
    AnalyticsMethods,
    BillingMethods,
    FeedMethods,
    PrivacyMethods,
)
from aisd.store.sqlite._errors import (
    ConflictError,
    NotFoundError,
    StorageUnavailable,
    StoreError,
    storage_failure,
)
from aisd.store.sqlite._ids import new_id
from aisd.store.sqlite._inline import connect_inline
from aisd.store.sqlite._intake import GroupCommit
from aisd.store.sqlite._lifecycle import LifecycleMethods
from aisd.store.sqlite._migrate import migrate
from aisd.store.sqlite._ops import OpsMethods
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._reads import ReadMethods
from aisd.store.sqlite._sync import (
    Write,
    group_transaction,
    on_thread,
    rows,
    snapshot,
    transaction,
)
from aisd.store.sqlite._tokens import TokenMethods

__all__ = ["SqliteStore", "open_store"]

T = TypeVar("T")
# The lease of a claimer that needs no heartbeat (see LeaseStart).
_NO_END = datetime(9999, 12, 31, tzinfo=UTC)
# Writes committed together at most: one transaction stays short (an intake batch is one).
MAX_GROUP = 64


async def _returning_id(db: aiosqlite.Connection, name: str, params: Any) -> int:
    # fetchall, not fetchone: a RETURNING statement must run to completion before COMMIT.
    rows = list(await db.execute_fetchall(Q[name], params))
    if not rows:
        raise StoreError(f"{name} returned no row")
    return int(rows[0][0])


class SqliteStore(
    ReadMethods,
    TokenMethods,
    FeedMethods,
    BillingMethods,
    PrivacyMethods,
    AnalyticsMethods,
    OpsMethods,
    LifecycleMethods,
):
    """The daemon's durable state in one SQLite file. Open it with :func:`open_store`."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        path: Path,
        checkpointer: Checkpointer,
        *,
        scratch: bool = False,
    ) -> None:
        self._writer = writer
        # A scratch database is thrown away, so nothing in it need survive a crash: it runs
        # with synchronous=OFF, which a claim's toggling back to FULL after its commit must
        # not undo (every commit is "durable" there, and none waits for the disk).
        self._scratch = scratch
        self._reader = reader
        self._checkpointer = checkpointer
        self._lock = anyio.Lock()
        self._writes = Coalescer(self._write_group, max_batch=MAX_GROUP, lock=self._lock)
        self._intake = GroupCommit(self._run)
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
        """Wait for the write in progress, then stop the checkpointer and close the
        connections (the last to close checkpoints the log and removes it)."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await anyio.to_thread.run_sync(self._checkpointer.close)
                await self._reader.close()
                await self._writer.close()
                self._checkpointer.release()

    async def _empty_log(self) -> bool:
        # On the checkpointer's connection, after any checkpoint it is running.
        return await anyio.to_thread.run_sync(self._checkpointer.truncate)

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
            self._checkpointer.wrote()
            self.health.succeeded()

    async def _emit(
        self, db: aiosqlite.Connection, events: Sequence[NewEvent], now: datetime
    ) -> list[int]:
        if not events:
            return []
        # Ids from the counter row, as _sync.emit takes them (see there).
        last = await _returning_id(db, "next_event_ids", {"n": len(events)})
        ids = list(range(last - len(events) + 1, last + 1))
        at = dt_in(now)
        await db.executemany(
            Q["insert_event_with_id"],
            [
                {
                    "id": event_id,
                    "at": at,
                    "type": event.type,
                    "owner_external_id": event.owner_external_id,
                    "token_id": event.token_id,
                    "import_id": event.import_id,
                    "data": json_in(event.data),
                }
                for event_id, event in zip(ids, events, strict=True)
            ],
        )
        return ids

    # -- intake --------------------------------------------------------------------------------

    async def submit_consent(
        self, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
    ) -> SubmitOutcome:
        """See :meth:`aisd.store.Store.submit_consent`. Committed together with the consents
        other callers submit meanwhile (one transaction, one fsync); answered once durable."""
        return await self._intake.submit(consent, now=now, since=since, expires_at=expires_at)

    # -- the import pipeline -------------------------------------------------------------------

    async def queue_refresh(
        self, token_id: str, *, now: datetime, since: date, quota: QuotaRule | None = None
    ) -> str | QuotaAnswer | None:
        """See :meth:`aisd.store.Store.queue_refresh`.

        Raises:
            NotFoundError: the token is unknown.
            ConflictError: the token is not ``active``.
        """

        def section(db: sqlite3.Connection) -> str | QuotaAnswer | None:
            found = rows(db, "token_owner", {"token_id": token_id})
            if not found:
                raise NotFoundError(f"token {token_id} not found")
            if found[0]["state"] != TokenState.ACTIVE.value:
                raise ConflictError(f"token {token_id} is {found[0]['state']}")
            if quota is not None:
                view = steps.quota_view(db, token_id, now=now, since=quota.horizon(now))
                answer = quota.decide(view)
                if not answer.allowed:
                    return answer
            return steps.queue_refresh(
                db, token_id, owner_id=found[0]["owner_id"], now=now, since=since
            )

        return await self._run(section)

    async def _run(
        self, fn: Callable[[sqlite3.Connection], T], *, bulk: bool = False, durable: bool = True
    ) -> T:
        """Run ``fn`` as one transaction in one crossing into the writer's thread.

        Short transactions are committed together with the others waiting meanwhile (see
        :func:`_sync.group_transaction`): one commit, one fsync for all of them, each answered
        once it is durable. A ``bulk`` transaction (storing a large result) runs alone and lets
        every short one waiting go first: those are the writes recorded before a call is sent
        upstream, and a slot stays idle while they wait. Shielded: once handed to the thread the
        transaction runs to its end anyway, and the writer must not be given the next one
        before it has.
        """
        with anyio.CancelScope(shield=True):
            # A scratch database never toggles synchronous (see __init__).
            durable = durable or self._scratch
            if not bulk:
                write = Write(fn, durable)
                await self._writes.join(write)
                if write.error is not None:
                    raise write.error
                result: T = write.result
                return result
            await self._acquire_after_short_writes()
            try:
                out, wrote = await self._on_writer(
                    partial(_changing, transaction(fn, durable=durable))
                )
            finally:
                self._lock.release()
        if wrote:
            self._checkpointer.wrote()
            self.health.succeeded()
        return out

    async def _write_group(self, writes: list[Write]) -> None:
        # The Coalescer holds the write lock meanwhile.
        wrote = await self._on_writer(partial(group_transaction, writes))
        if wrote:
            self._checkpointer.wrote()
            # Only a write that landed says the disk takes writes again: an idle claim that
            # changed nothing commits even on a full disk.
            self.health.succeeded()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the reader's thread in one call, its statements one snapshot."""
        return await on_thread(self._reader, snapshot(fn))

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await on_thread(self._writer, fn)
        except Exception as exc:
            reason = storage_failure(exc)
            if reason is None:
                raise
            self.health.failed(reason)
            raise StorageUnavailable(reason) from exc

    async def _acquire_after_short_writes(self) -> None:
        while True:
            await self._writes.until_idle()
            await self._lock.acquire()
            if not self._writes.busy:
                return
            # One arrived while this waited for the lock: it goes first.
            self._lock.release()

    async def plan_tick(self, *, now: datetime, limit: int, planner: TickPlanner) -> TickOutcome:
        """See :meth:`aisd.store.Store.plan_tick`. Most ticks find nothing due: that is seen on
        the reader, without taking the write lock; the section re-reads inside its transaction."""
        params = {"now": dt_in(now), "limit": 1}

        def peek(db: sqlite3.Connection) -> TickOutcome | None:
            if rows(db, "due_token_records", params):
                return None
            return TickOutcome((), (), steps.next_refresh_due(db))

        idle = await self._read(peek)
        if idle is not None:
            return idle
        return await self._run(partial(steps.plan_due, now=now, limit=limit, planner=planner))

    # -- claims and fenced steps ---------------------------------------------------------------

    @overload
    async def lease(self, write: LeaseStart, *, now: datetime) -> Lease: ...

    @overload
    async def lease(self, write: LeaseRenew, *, now: datetime) -> bool: ...

    @overload
    async def lease(self, write: LeaseEnd, *, now: datetime) -> None: ...

    async def lease(self, write: LeaseWrite, *, now: datetime) -> Lease | bool | None:
        """See :meth:`aisd.store.Store.lease`. A renewal only extends a row: no send depends
        on it being durable."""
        until: datetime | None = None
        if isinstance(write, LeaseStart):
            ttl = write.ttl_seconds
            until = _NO_END if ttl is None else now + timedelta(seconds=ttl)
        elif isinstance(write, LeaseRenew):
            until = now + timedelta(seconds=write.ttl_seconds)
        step = partial(
            steps.lease,
            write=write,
            now=now,
            new_claimer=new_id("clm_"),
            until=until,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        return await self._run(step, durable=not isinstance(write, LeaseRenew))

    async def claim_work(self, claimer: str, *, now: datetime) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.claim_work`."""
        return await self._run(partial(steps.claim_work, claimer=claimer, now=now), durable=False)

    async def open_jobs(self) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.open_jobs`."""
        return [steps.job_of(row) for row in await self._reader.execute_fetchall(Q["open_jobs"])]

    async def begin_access(
        self,
        claim: Claim | None,
        kind: AccessKind,
        *,
        now: datetime,
        token_id: str | None,
        session_id: str | None = None,
        quota: QuotaRule | None = None,
        event: NewEvent | None = None,
    ) -> int | QuotaAnswer:
        """See :meth:`aisd.store.Store.begin_access`. Committed with ``synchronous=FULL``
        before it returns, so the row survives a crash or power loss right after the send."""

        def section(db: sqlite3.Connection) -> int | QuotaAnswer:
            answer = None
            if quota is not None:
                assert token_id is not None
                view = steps.quota_view(db, token_id, now=now, since=quota.horizon(now))
                answer = quota.decide(view)
                if not answer.allowed:
                    return answer
            if claim is None:
                return steps.record_access(db, AccessKind(kind), now=now, token_id=token_id)
            return steps.begin_access(
                db,
                claim,
                AccessKind(kind),
                now=now,
                token_id=token_id,
                session_id=session_id,
                answer=answer,
                event=event,
            )

        return await self._run(section)

    async def end_access(
        self,
        access_id: int,
        *,
        outcome: str,
        error_name: str | None = None,
        pressure: str | None = None,
        step: StepAfter | None = None,
    ) -> Budget:
        """See :meth:`aisd.store.Store.end_access`.

        Raises:
            NotFoundError: no ledger row has this id.
            LeaseLost: ``step``'s write changed no row; nothing was written.
            sqlite3.IntegrityError: ``outcome`` is not ``ok``, ``error`` or ``not_sent``.
        """
        return await self._run(
            partial(
                steps.end_access,
                access_id=access_id,
                outcome=outcome,
                error_name=error_name,
                pressure=pressure,
                step=step,
            )
        )

    async def end_then_begin_access(
        self, access_id: int, *, step: StepAfter, then: AccessStart
    ) -> tuple[Budget, int]:
        """See :meth:`aisd.store.Store.end_then_begin_access`; committed before it returns.

        Raises:
            NotFoundError: no ledger row has this id.
            LeaseLost: the claim is lost or the import moved meanwhile; nothing was written.
        """
        return await self._run(
            partial(steps.end_then_begin_access, access_id=access_id, step=step, then=then)
        )

    @overload
    async def advance(self, claim: Claim, write: Succeed, *, now: datetime) -> MergeStats: ...

    @overload
    async def advance(
        self, claim: Claim, write: StepWrite | Fail, *, now: datetime
    ) -> list[ImportJob]: ...

    async def advance(
        self, claim: Claim, write: StepWrite | Succeed | Fail, *, now: datetime
    ) -> list[ImportJob] | MergeStats:
        """See :meth:`aisd.store.Store.advance`. Storing a result is a bulk transaction (the
        short writes waiting go first); the end upstream only frees a slot and claims, so no
        send depends on it being durable."""
        if isinstance(write, Succeed):
            success = partial(steps.finish_success, claim=claim, write=write, now=now)
            return await self._run(success, bulk=True)
        if isinstance(write, Fail):
            await self._run(partial(steps.fail_claimed, claim=claim, write=write, now=now))
            return []
        durable = write.step != Step.ENDED_UPSTREAM
        step = partial(steps.record_step, claim=claim, write=write, now=now)
        return await self._run(step, durable=durable)

    # -- raw replies and replay ----------------------------------------------------------------

    async def replay_result(
        self, import_id: str, result: ImportResult, *, coverage_start: date
    ) -> MergeStats:
        """See :meth:`aisd.store.Store.replay_result`. Accounts' ``updatedAt`` becomes the
        import's end, as it was when the import first finished."""

        def replay(db: sqlite3.Connection) -> MergeStats:
            found = rows(db, "import_row", {"id": import_id})
            if not found:
                raise NotFoundError(f"import {import_id} not found")
            imp = found[0]
            ts = imp["finished_at"] or imp["created_at"]
            return steps.merge(db, imp["owner_id"], import_id, result, coverage_start, ts)

        return await self._run(replay, bulk=True)


def _changing(fn: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> tuple[T, bool]:
    """``fn(db)`` and whether it changed any row."""
    before = db.total_changes
    return fn(db), db.total_changes != before


def _create_private(path: Path) -> None:
    # 0600 from the first byte: SQLite gives -wal and -shm the main file's mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def _connect(path: Path, *, scratch: bool, writer: bool) -> aiosqlite.Connection:
    if scratch:
        return connect_inline(path, yields=not writer)
    return aiosqlite.connect(path, isolation_level=None)


async def _open(path: Path, *, scratch: bool) -> SqliteStore:
    await anyio.to_thread.run_sync(_create_private, path)
    await anyio.to_thread.run_sync(migrate, path)
    writer = await _connect(path, scratch=scratch, writer=True)
    try:
        await writer.executescript(Q["writer_pragmas"])
        if scratch:
            await writer.executescript(Q["scratch_pragmas"])
        writer.row_factory = sqlite3.Row
        reader = await _connect(path, scratch=scratch, writer=False)
    except BaseException:
        await writer.close()
        raise
    try:
        await reader.executescript(Q["reader_pragmas"])
        reader.row_factory = sqlite3.Row
        checkpointer = await anyio.to_thread.run_sync(partial(Checkpointer, path, scratch=scratch))
    except BaseException:
        await reader.close()
        await writer.close()
        raise
    return SqliteStore(writer, reader, path, checkpointer, scratch=scratch)


class _Opening:
    """Awaitable and async context manager: ``await open_store(p)`` or
    ``async with open_store(p) as store``."""

    def __init__(self, path: Path, *, scratch: bool) -> None:
        self._path = path
        self._scratch = scratch
        self._store: SqliteStore | None = None

    def __await__(self) -> Generator[Any, None, SqliteStore]:
        return _open(self._path, scratch=self._scratch).__await__()

    async def __aenter__(self) -> SqliteStore:
        self._store = await _open(self._path, scratch=self._scratch)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()


def open_store(path: str | Path, *, scratch: bool = False) -> _Opening:
    """Open (creating with mode 0600 and migrating as needed) the SQLite store at ``path``.

    Args:
        path: the database file.
        scratch: a throwaway database one event loop owns (``aisd simulate``): its statements
            run on the loop's thread (:mod:`aisd.store.sqlite._inline`), never the daemon's.

    Returns:
        An awaitable giving a :class:`SqliteStore`, usable as ``async with`` too (closing the
        store on exit).

    Raises:
        DatabaseTooNewError: the file was migrated by a newer aisd.
    """
    return _Opening(Path(path), scratch=scratch)
