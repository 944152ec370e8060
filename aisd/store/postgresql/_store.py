"""The PostgreSQL implementation of :class:`aisd.store.Store`, for several daemons on one
database.

The transactions are the SQLite backend's backend-neutral step code run through
:mod:`aisd.store.postgresql._dialect`; what SQLite got from having one writer is made explicit
here instead:

- claims and budget moves lock the budget row, and slot rows are taken ``FOR UPDATE SKIP
  LOCKED``, so racing daemons never hold more slots than the (possibly lowered) limit;
- a quota section first takes ``pg_advisory_xact_lock`` on every account the token reaches, in
  sorted order, and the planner tick takes one lock that excludes all of them;
- event ids and the change sequence come from counter rows locked until commit;
- leases run on the database clock (see ``queries_pipeline.sql``).

Each transaction runs on a worker thread over a pooled connection, shielded from cancellation
(a psycopg statement cancelled half-way closes its connection); serialization failures and
deadlocks run it again, and a server that is gone, full or restarting is ``StorageUnavailable``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast, overload

import aiosqlite
import anyio
import anyio.abc
import anyio.to_thread
import psycopg
from psycopg_pool import ConnectionPool

from aisd.kontomatik._models import ImportResult
from aisd.phases import Budget, Step
from aisd.store._fence import LeaderTerm, StaleLeader, current_term
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
from aisd.store.postgresql._connect import connection_kwargs
from aisd.store.postgresql._dialect import AsyncDb, Row, SyncDb, row_factory
from aisd.store.postgresql._errors import verdict
from aisd.store.postgresql._migrate import migrate
from aisd.store.postgresql._queries import QUERIES as PQ
from aisd.store.sqlite import _steps as steps
from aisd.store.sqlite._codec import dt_in, json_in
from aisd.store.sqlite._data import (
    AnalyticsMethods,
    BillingMethods,
    FeedMethods,
    PrivacyMethods,
)
from aisd.store.sqlite._data_core import scalar
from aisd.store.sqlite._errors import (
    ConflictError,
    NotFoundError,
    RevocationInFlight,
    RevocationSent,
    StorageUnavailable,
)
from aisd.store.sqlite._ids import new_id
from aisd.store.sqlite._intake import GroupCommit
from aisd.store.sqlite._lifecycle import LifecycleMethods
from aisd.store.sqlite._ops import OpsMethods
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._reads import ReadMethods
from aisd.store.sqlite._sync import rows
from aisd.store.sqlite._tokens import TokenMethods

__all__ = ["PostgresStore", "open_postgres_store"]

T = TypeVar("T")
_FINAL_STATES = ("successful", "failed")
# A lost race (40001, 40P01) runs the transaction again, this many times at most.
_ATTEMPTS = 5
# A lease "until released": a century, on the database's clock.
_NO_END_SECONDS = 100 * 365 * 86400.0
# How long a revocation without a recorded answer may still be awaiting it (an HTTP request's
# timeout and its retries); older ones died with their daemon.
_REVOKE_IN_FLIGHT_SECONDS = 120.0
# Steps after which another daemon may find work to claim.
_FREEING = frozenset({Step.REQUEUE, Step.ENDED_UPSTREAM, Step.LET_GO})
# The listener's pause before connecting again after its connection broke.
_LISTEN_RETRY_SECONDS = 1.0


class _Reader:
    """Reads outside a transaction, each on a pooled connection of its own (the mixins' view
    of SQLite's query-only connection)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[Row]:
        def read(db: SyncDb) -> list[Row]:
            return db.execute(sql, params).fetchall()

        return await self._store._run_db(read)

    async def execute(self, sql: str, params: Any = ()) -> None:
        def run(db: SyncDb) -> None:
            db.execute(sql, params)

        await self._store._run_db(run, autocommit=True)


class PostgresStore(
    ReadMethods,
    TokenMethods,
    FeedMethods,
    BillingMethods,
    PrivacyMethods,
    AnalyticsMethods,
    OpsMethods,
    LifecycleMethods,
):
    """The daemon's durable state in a PostgreSQL database. Open it with
    :func:`open_postgres_store`.

    Attributes:
        origin: this store's name (host, pid and a nonce: one per daemon start), carried by
            every event it appends (:attr:`aisd.store.EventRecord.origin`).
    """

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Row]],
        connect: dict[str, Any],
        *,
        origin: str,
    ) -> None:
        self.origin = origin
        self._pool = pool
        self._connect = connect
        self._lock = anyio.Lock()
        self.health = StorageHealth()
        self._intake = GroupCommit(self._run_intake, lock=_lock_sessions)
        self._reader = cast(aiosqlite.Connection, _Reader(self))
        # Statements outside any transaction (VACUUM after an erasure).
        self._writer = self._reader

    def __repr__(self) -> str:
        return "PostgresStore()"

    async def _empty_log(self) -> bool:
        # (busy,): what PostgreSQL's WAL keeps is out of aisd's reach (README, "Two hosts").
        return not await scalar(self._writer, "wal_checkpoint_truncate")

    # -- running transactions ------------------------------------------------------------------

    def _attempt(self, fn: Callable[[SyncDb], T], autocommit: bool, term: LeaderTerm | None) -> T:
        with self._pool.connection() as conn:
            if autocommit:
                conn.autocommit = True
                try:
                    return fn(SyncDb(conn))
                finally:
                    conn.autocommit = False
            # The pool's connection block commits at its end, or rolls back when fn raises.
            db = SyncDb(conn)
            if term is not None:
                _hold_term(db, term)
            return fn(db)

    async def _run_db(self, fn: Callable[[SyncDb], T], *, autocommit: bool = False) -> T:
        """Run ``fn`` as one transaction on a worker thread, shielded from cancellation; in
        a leader's duty, only while its term holds (:mod:`aisd.store._fence`).

        Raises:
            StaleLeader: the duty's term has passed; nothing was written.
        """
        term = current_term()
        with anyio.CancelScope(shield=True):
            for attempt in range(_ATTEMPTS):
                try:
                    out = await anyio.to_thread.run_sync(self._attempt, fn, autocommit, term)
                except Exception as exc:
                    found = verdict(exc)
                    if found is None:
                        raise
                    kind, reason = found
                    if kind == "retry" and attempt + 1 < _ATTEMPTS:
                        continue
                    self.health.failed(reason)
                    raise StorageUnavailable(reason) from exc
                self.health.succeeded()
                return out
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A backend-neutral read of several statements, in one transaction on one worker."""
        return await self._run(fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a backend-neutral step function (written against ``sqlite3.Connection``)."""
        return await self._run_db(lambda db: fn(cast(sqlite3.Connection, db)))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A transaction for the mixins' statement-by-statement code."""
        try:
            conn = await anyio.to_thread.run_sync(partial(self._pool.getconn, timeout=5))
        except Exception as exc:
            found = verdict(exc)
            if found is None:
                raise
            self.health.failed(found[1])
            raise StorageUnavailable(found[1]) from exc
        try:
            try:
                term = current_term()
                if term is not None:
                    await anyio.to_thread.run_sync(_hold_term, SyncDb(conn), term)
                yield cast(aiosqlite.Connection, AsyncDb(conn))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(conn.rollback)
                raise
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.commit)
        except Exception as exc:
            found = verdict(exc)
            if found is None:
                raise
            self.health.failed(found[1])
            raise StorageUnavailable(found[1]) from exc
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._pool.putconn, conn)
        self.health.succeeded()

    async def _emit(self, db: aiosqlite.Connection, events: Any, now: datetime) -> list[int]:
        if not events:
            return []
        found = await db.execute_fetchall(Q["next_event_ids"], {"n": len(events)})
        last = int(next(iter(found))[0])
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

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the pool (the transaction in progress ends first)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._pool.close)

    async def ping(self) -> None:
        """A trivial read; raises if the database does not answer."""
        await self._reader.execute_fetchall(PQ["ping"])

    # -- intake --------------------------------------------------------------------------------

    async def submit_consent(
        self, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
    ) -> SubmitOutcome:
        """See :meth:`aisd.store.Store.submit_consent`. Concurrent submits on this host share
        one transaction (:class:`~aisd.store.sqlite._intake.GroupCommit`), which first locks
        its sessionIds in sorted order: a repeat on another host at the same moment waits for
        the first one's commit and then finds its consent. Should a writer that took no lock
        store a sessionId between the batch's look and its insert all the same, that consent
        is written again on its own and gets the winner's ids, as any repeat does."""
        return await self._intake.submit(consent, now=now, since=since, expires_at=expires_at)

    async def _run_intake(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        # A batch that stored a consent gives the other daemons work to claim.
        await self._run(_notifying(fn))

    # -- quota sections ------------------------------------------------------------------------

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
                _lock_reach(db, [token_id])
                view = steps.quota_view(db, token_id, now=now, since=quota.horizon(now))
                answer = quota.decide(view)
                if not answer.allowed:
                    return answer
            queued = steps.queue_refresh(
                db, token_id, owner_id=found[0]["owner_id"], now=now, since=since
            )
            if queued is not None:
                _notify(db)
            return queued

        return await self._run(section)

    async def plan_tick(self, *, now: datetime, limit: int, planner: TickPlanner) -> TickOutcome:
        """See :meth:`aisd.store.Store.plan_tick`. The tick excludes every other quota section
        for its few milliseconds (one lock, instead of one per account of 500 tokens)."""

        def tick(db: sqlite3.Connection) -> TickOutcome:
            db.execute(PQ["lock_quota_exclusive"])
            outcome = steps.plan_due(db, now=now, limit=limit, planner=planner)
            if outcome.queued:
                _notify(db)
            return outcome

        return await self._run(tick)

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
        """See :meth:`aisd.store.Store.begin_access`; committed before it returns. Two
        daemons asked to revoke one token send one Revoke between them.

        Raises:
            RevocationSent: upstream already accepted a revocation of the token.
            RevocationInFlight: another revocation of it awaits its answer.
        """

        def section(db: sqlite3.Connection) -> int | QuotaAnswer:
            answer = None
            if quota is not None:
                assert token_id is not None
                _lock_reach(db, [token_id])
                view = steps.quota_view(db, token_id, now=now, since=quota.horizon(now))
                answer = quota.decide(view)
                if not answer.allowed:
                    return answer
            if claim is None:
                if kind == AccessKind.REVOKE and token_id is not None:
                    _check_revocation(db, token_id, now)
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

    # -- claims and fenced steps ---------------------------------------------------------------

    @overload
    async def lease(self, write: LeaseStart, *, now: datetime) -> Lease: ...

    @overload
    async def lease(self, write: LeaseRenew, *, now: datetime) -> bool: ...

    @overload
    async def lease(self, write: LeaseEnd, *, now: datetime) -> None: ...

    async def lease(self, write: LeaseWrite, *, now: datetime) -> Lease | bool | None:
        """See :meth:`aisd.store.Store.lease`. The lease runs on the database's clock (a
        lapsed one is not renewed); ending it wakes the other daemons."""
        until: datetime | None = None
        if isinstance(write, LeaseStart):
            ttl = _NO_END_SECONDS if write.ttl_seconds is None else write.ttl_seconds
            until = now + timedelta(seconds=ttl)
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
        return await self._run(_notifying(step) if isinstance(write, LeaseEnd) else step)

    async def claim_work(self, claimer: str, *, now: datetime) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.claim_work`."""
        return await self._run(_relaxed(partial(steps.claim_work, claimer=claimer, now=now)))

    async def open_jobs(self) -> list[ImportJob]:
        """See :meth:`aisd.store.Store.open_jobs`."""
        found = await self._reader.execute_fetchall(Q["open_jobs"])
        return [steps.job_of(row) for row in found]

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
        """See :meth:`aisd.store.Store.advance`. A step that frees a slot or the claim wakes
        the other daemons; the end upstream (a slot handed on) commits without waiting for
        the WAL flush, as a claim does."""
        if isinstance(write, Succeed):
            success = partial(steps.finish_success, claim=claim, write=write, now=now)
            return await self._run(_notifying(success))
        if isinstance(write, Fail):
            failure = partial(steps.fail_claimed, claim=claim, write=write, now=now)
            await self._run(_notifying(failure))
            return []
        record = partial(steps.record_step, claim=claim, write=write, now=now)
        if write.step == Step.ENDED_UPSTREAM:
            return await self._run(_notifying(_relaxed(record)))
        return await self._run(_notifying(record) if write.step in _FREEING else record)

    async def listen(
        self,
        wake: Callable[[], None],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``wake`` whenever another daemon (or this one) commits claimable work, until
        cancelled. A dedicated connection outside the pool, LISTENing again after every
        reconnection (a notification sent meanwhile is lost: the pipeline polls anyway)."""
        started = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(autocommit=True, **self._connect)
                async with conn:
                    await conn.execute(PQ["listen_work"])
                    if not started:
                        started = True
                        task_status.started()
                    wake()  # anything committed while no one listened
                    async for _ in conn.notifies():
                        wake()
            except psycopg.Error:
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(_LISTEN_RETRY_SECONDS)

    # -- the cluster ---------------------------------------------------------------------------

    async def take_leadership(self, holder: str, *, ttl_seconds: float) -> int | None:
        """Take or renew the leader lease for ``holder`` (database clock); returns the term
        held, or None while another daemon's lease runs."""

        def take(db: SyncDb) -> int | None:
            found = db.execute(
                PQ["take_leadership"], {"holder": holder, "ttl": ttl_seconds}
            ).fetchall()
            return int(found[0]["term"]) if found else None

        return await self._run_db(take)

    async def resign_leadership(self, holder: str) -> None:
        """End ``holder``'s leader lease now (a graceful stop): another daemon takes over at
        its next attempt instead of after the lease."""

        def resign(db: SyncDb) -> None:
            db.execute(PQ["resign_leadership"], {"holder": holder})

        await self._run_db(resign)

    async def cluster(self) -> dict[str, Any]:
        """The daemons sharing this database (host, pid, heartbeat age on the database clock,
        whether their lease runs, slots held) and the leader lease."""

        def read(db: SyncDb) -> dict[str, Any]:
            daemons = [
                {
                    "claimer": row["id"],
                    "host": row["host"],
                    "pid": row["pid"],
                    "heartbeatAgeSeconds": round(float(row["heartbeat_age"]), 1),
                    "live": bool(row["live"]),
                    "slotsHeld": int(row["slots"]),
                }
                for row in db.execute(PQ["cluster_daemons"]).fetchall()
            ]
            leader = db.execute(PQ["cluster_leader"]).fetchall()[0]
            return {
                "daemons": daemons,
                "leader": leader["holder"] if leader["live"] else None,
                "leaderTerm": int(leader["term"]),
            }

        return await self._run_db(read)

    # -- raw replies and replay ----------------------------------------------------------------

    async def replay_result(
        self, import_id: str, result: ImportResult, *, coverage_start: date
    ) -> MergeStats:
        """See :meth:`aisd.store.Store.replay_result`."""

        def replay(db: sqlite3.Connection) -> MergeStats:
            found = rows(db, "import_row", {"id": import_id})
            if not found:
                raise NotFoundError(f"import {import_id} not found")
            imp = found[0]
            ts = imp["finished_at"] or imp["created_at"]
            return steps.merge(db, imp["owner_id"], import_id, result, coverage_start, ts)

        return await self._run(replay)


def _hold_term(db: SyncDb, term: LeaderTerm) -> None:
    """Hold the leader row for the transaction if ``term`` is still current, else refuse."""
    if not db.execute(PQ["hold_term"], {"holder": term.holder, "term": term.term}).fetchall():
        raise StaleLeader(f"leader term {term.term} has passed: the duty writes nothing")


def _lock_sessions(db: sqlite3.Connection, session_ids: list[str]) -> None:
    """Hold, until commit, a lock on each sessionId of an intake batch (in sorted order, so
    two hosts' batches never deadlock)."""
    db.execute(PQ["lock_sessions"], {"session_ids": session_ids})


def _notify(db: sqlite3.Connection) -> None:
    db.execute(PQ["notify_work"])


def _notifying(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn``, then a wake-up for the other daemons in the same transaction (a slot freed)."""

    def run(db: sqlite3.Connection) -> T:
        out = fn(db)
        _notify(db)
        return out

    return run


def _check_revocation(db: sqlite3.Connection, token_id: str, now: datetime) -> None:
    db.execute(PQ["lock_revocation"], {"token_id": token_id})
    recent = dt_in(now - timedelta(seconds=_REVOKE_IN_FLIGHT_SECONDS))
    found = db.execute(PQ["revocation_state"], {"token_id": token_id, "recent": recent}).fetchall()
    if not found:
        return
    if found[0][0] == "ok":
        raise RevocationSent(f"token {token_id} was revoked upstream already")
    raise RevocationInFlight(f"token {token_id} is being revoked by another daemon")


def _relaxed(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` in a transaction that commits without waiting for the WAL flush (claims)."""

    def run(db: sqlite3.Connection) -> T:
        db.execute(PQ["commit_without_fsync"])
        return fn(db)

    return run


def _lock_reach(db: sqlite3.Connection, token_ids: list[str]) -> None:
    """Hold, until commit, a lock on every account ``token_ids`` reach (and on the tokens
    themselves, whose accounts may not be known yet), in sorted order."""
    db.execute(PQ["lock_quota_shared"])
    db.execute(PQ["lock_quota_reach"], {"token_ids": token_ids})


async def open_postgres_store(
    url: str, *, password: str | None = None, max_connections: int = 10
) -> PostgresStore:
    """Connect to the database at ``url``, migrate it as needed and return the store.

    Args:
        url: a libpq URL without a password.
        password: the password (from the credentials directory); None leaves it to libpq.
        max_connections: the pool's size.

    Raises:
        DatabaseTooNewError: the database was migrated by a newer aisd.
        StorageUnavailable: the database cannot be reached.
    """
    # The pool logs every failed reconnection with libpq's text; the store's health says the
    # same once, rate-limited, without host names.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    origin = _store_origin()
    kwargs = connection_kwargs(url, password=password, origin=origin)
    conninfo = kwargs.pop("conninfo")
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, **kwargs) as conn:
            await migrate(conn)
    except psycopg.Error as exc:
        found = verdict(exc)
        if found is None:
            raise
        raise StorageUnavailable(found[1]) from exc
    pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
        conninfo,
        kwargs={**kwargs, "row_factory": row_factory},
        min_size=1,
        max_size=max_connections,
        open=False,
        timeout=5,
        # A connection that broke while idle (a server restart) is replaced, not handed out.
        check=ConnectionPool.check_connection,
        name="aisd",
    )
    await anyio.to_thread.run_sync(partial(pool.open, wait=False))
    return PostgresStore(pool, {"conninfo": conninfo, **kwargs}, origin=origin)


def _store_origin() -> str:
    """A name for one daemon start: its host (as a name libpq options can carry), pid and a
    nonce (a pid is reused after a restart)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:100] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
