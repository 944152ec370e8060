"""What the data-out mixins (feed, billing, privacy) use of the store they are mixed into."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

import aiosqlite
import anyio

from aisd.store._records import NewEvent
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["DataCore", "fetch", "one", "scalar"]

T = TypeVar("T")


class DataCore(Protocol):
    """The parts of :class:`~aisd.store.sqlite.SqliteStore` the data-out mixins rely on."""

    _reader: aiosqlite.Connection
    _writer: aiosqlite.Connection
    _lock: anyio.Lock

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the reader's side in one call, all its statements reading one snapshot."""
        ...

    async def _empty_log(self) -> bool:
        """Copy the write-ahead log into the database and empty it, under the write lock;
        false when a reader kept it from emptying."""
        ...

    async def _emit(
        self, db: aiosqlite.Connection, events: Sequence[NewEvent], now: datetime
    ) -> list[int]: ...


async def fetch(db: aiosqlite.Connection, name: str, params: Any = ()) -> list[sqlite3.Row]:
    """All rows of a named query."""
    return list(await db.execute_fetchall(Q[name], params))


async def one(db: aiosqlite.Connection, name: str, params: Any = ()) -> sqlite3.Row | None:
    """The first row of a named query, or None."""
    rows = await fetch(db, name, params)
    return rows[0] if rows else None


async def scalar(db: aiosqlite.Connection, name: str, params: Any = ()) -> Any:
    """The first column of the first row of a named query, or None without a row."""
    rows = await fetch(db, name, params)
    return rows[0][0] if rows else None
