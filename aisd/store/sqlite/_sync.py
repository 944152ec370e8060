"""One crossing into the database thread per transaction.

aiosqlite runs each statement as its own call on the connection's thread: a transaction of ten
statements waits ten times for the event loop and the thread to hand over. Here a whole
transaction is one plain function over the ``sqlite3`` connection, run as one call on that same
thread, so the event loop waits once and the statements run back to back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import aiosqlite

from aisd.store._records import NewEvent
from aisd.store.sqlite._codec import dt_in, json_in
from aisd.store.sqlite._errors import StoreError, storage_failure
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = [
    "Write",
    "emit",
    "emit_each",
    "group_transaction",
    "on_thread",
    "returning_id",
    "rows",
    "snapshot",
    "transaction",
]

T = TypeVar("T")


async def on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` on ``conn``'s own thread with the raw connection, as one call.

    aiosqlite has no public call for this; its ``_execute`` is what its own ``execute`` uses.
    """
    execute = cast(Callable[..., Awaitable[T]], conn._execute)
    return await execute(fn, conn._conn)


def transaction(
    fn: Callable[[sqlite3.Connection], T], *, durable: bool = True
) -> Callable[[sqlite3.Connection], T]:
    """``fn`` wrapped in ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back when it raises).

    ``durable=False`` commits without waiting for the fsync (``synchronous=NORMAL`` for this
    one commit): only for claims, whose loss in a crash is harmless (a restart claims again).
    The next durable commit, which precedes every call sent upstream, fsyncs the log with them.
    """

    def body(db: sqlite3.Connection) -> T:
        if not durable:
            db.execute(Q["commit_without_fsync"])
        try:
            db.execute(Q["begin_immediate"])
            try:
                out = fn(db)
                db.execute(Q["commit"])
            except BaseException:
                if db.in_transaction:
                    db.execute(Q["rollback"])
                raise
        finally:
            if not durable:
                db.execute(Q["commit_with_fsync"])
        return out

    return body


def snapshot(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` wrapped in ``BEGIN`` ... ``COMMIT`` on a reader: its statements read one
    snapshot (and the reader's thread is crossed once for them all)."""

    def body(db: sqlite3.Connection) -> T:
        db.execute(Q["begin_read"])
        try:
            return fn(db)
        finally:
            db.execute(Q["commit"])

    return body


@dataclass(slots=True)
class Write:
    """One caller's transaction body in a group commit, and what running it gave."""

    fn: Callable[[sqlite3.Connection], Any]
    durable: bool
    result: Any = None
    error: Exception | None = None


def group_transaction(writes: Sequence[Write], db: sqlite3.Connection) -> bool:
    """Run the ``writes`` in one transaction, one commit (one fsync) for them all; returns
    whether any row changed.

    Each runs under a savepoint: one that raises is rolled back alone and its error kept on
    it, as if its own transaction had failed, and the others commit. A storage failure (a full
    disk) or one that ended the transaction fails the whole group: it is raised, nothing is
    committed. The commit waits for the fsync unless no write asked for it (claims only, see
    :func:`transaction`).
    """
    before = db.total_changes
    if len(writes) == 1:
        _alone(writes[0], db)
        return db.total_changes != before

    def each(db: sqlite3.Connection) -> None:
        for write in writes:
            db.execute(Q["savepoint_each"])
            try:
                write.result = write.fn(db)
            except Exception as exc:
                if storage_failure(exc) is not None or not db.in_transaction:
                    raise
                db.execute(Q["rollback_to_each"])
                write.error = exc
            db.execute(Q["release_each"])

    transaction(each, durable=any(write.durable for write in writes))(db)
    return db.total_changes != before


def _alone(write: Write, db: sqlite3.Connection) -> None:
    """A group of one: its own transaction, no savepoint. One that raises is rolled back and
    its error kept on it, as under a savepoint, with the same storage failures raised."""

    def body(db: sqlite3.Connection) -> Any:
        try:
            return write.fn(db)
        except Exception as exc:
            if storage_failure(exc) is None and db.in_transaction:
                write.error = exc
            raise

    try:
        write.result = transaction(body, durable=write.durable)(db)
    except Exception as exc:
        if write.error is not exc:
            write.error = None
            raise


def rows(db: sqlite3.Connection, name: str, params: Any = ()) -> list[sqlite3.Row]:
    """All rows of a named query."""
    return list(db.execute(Q[name], params).fetchall())


def returning_id(db: sqlite3.Connection, name: str, params: Any) -> int:
    """The id a ``RETURNING id`` statement gave."""
    found = rows(db, name, params)
    if not found:
        raise StoreError(f"{name} returned no row")
    return int(found[0][0])


def emit(db: sqlite3.Connection, events: Sequence[NewEvent], now: datetime) -> list[int]:
    """Append ``events`` with ids taken from the ``event_id`` counter row inside the caller's
    transaction: the row is held until commit, so ids ascend in commit order on any backend."""
    return emit_each(db, [(event, now) for event in events])


def emit_each(db: sqlite3.Connection, events: Sequence[tuple[NewEvent, datetime]]) -> list[int]:
    """:func:`emit` for events each with its own time."""
    if not events:
        return []
    last = returning_id(db, "next_event_ids", {"n": len(events)})
    ids = list(range(last - len(events) + 1, last + 1))
    db.executemany(
        Q["insert_event_with_id"],
        [
            {
                "id": event_id,
                "at": dt_in(at),
                "type": event.type,
                "owner_external_id": event.owner_external_id,
                "token_id": event.token_id,
                "import_id": event.import_id,
                "data": json_in(event.data),
            }
            for event_id, (event, at) in zip(ids, events, strict=True)
        ],
    )
    return ids
