"""The seam that lets the backend-neutral step code run on PostgreSQL.

The store's transactions (:mod:`aisd.store.sqlite._steps`, the token, read and data-out mixins)
are written against a connection that takes named statements from the SQLite backend's query
table. Here a psycopg connection is given the same face: each statement text from that table is
looked up by its name, and the PostgreSQL text of the same name (``queries*.sql`` beside this
file) runs instead. Rows answer to a column's position and to its name, as ``sqlite3.Row`` does.
A statement without a PostgreSQL text is a bug and fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread
import psycopg
from psycopg.rows import RowMaker

from aisd.store.postgresql._queries import QUERIES as PG
from aisd.store.sqlite._queries import QUERIES as SQLITE

__all__ = ["AsyncDb", "Row", "SyncDb", "row_factory", "to_postgres"]

T = TypeVar("T")


def _by_text() -> dict[str, str]:
    names: dict[str, str] = {}
    for name, text in SQLITE.items():
        other = names.setdefault(text, name)
        # Two names with one SQLite text must mean one PostgreSQL statement too.
        if other != name and PG.get(other) != PG.get(name):
            raise RuntimeError(f"queries {other} and {name} share a text but not a meaning")
    return names


_NAME_OF = _by_text()


def to_postgres(sql: str) -> str:
    """The PostgreSQL text of a statement of the SQLite query table (or of this backend's own
    table, passed through)."""
    name = _NAME_OF.get(sql)
    if name is None:
        return sql
    try:
        return PG[name]
    except KeyError:
        raise RuntimeError(f"query {name} has no PostgreSQL text") from None


class Row(tuple[Any, ...]):
    """A result row, indexed by position or by column name."""

    _names: Mapping[str, int]

    def __new__(cls, values: Sequence[Any], names: Mapping[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)


def row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    """psycopg's row factory for :class:`Row`."""
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        return Row(values, names)

    return make


def _params(params: Any) -> Any:
    return params if params else None


class SyncDb:
    """A psycopg connection with ``sqlite3.Connection``'s face, for code running on a worker
    thread inside one transaction."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[Row]:
        """Run one statement; the cursor has ``rowcount`` and the rows."""
        return self._conn.execute(to_postgres(sql), _params(params))

    def executemany(self, sql: str, seq: Iterable[Any]) -> psycopg.Cursor[Row]:
        """Run one statement once per parameter set."""
        batch = list(seq)
        cursor = self._conn.cursor()
        if batch:
            cursor.executemany(to_postgres(sql), batch)
        return cursor


class _Result:
    """What ``AsyncDb.execute`` returns: awaitable, and an async context manager of the
    cursor (both ways aiosqlite's ``execute`` is used)."""

    def __init__(self, run: Callable[[], psycopg.Cursor[Row]]) -> None:
        self._run = run

    async def _cursor(self) -> psycopg.Cursor[Row]:
        return await anyio.to_thread.run_sync(self._run)

    def __await__(self) -> Any:
        return self._cursor().__await__()

    async def __aenter__(self) -> psycopg.Cursor[Row]:
        return await self._cursor()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class AsyncDb:
    """A psycopg connection with ``aiosqlite.Connection``'s face: each statement runs on a
    worker thread (psycopg connections are thread-safe), in the caller's transaction."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._db = SyncDb(conn)

    def execute(self, sql: str, params: Any = ()) -> _Result:
        """Run one statement."""
        return _Result(partial(self._db.execute, sql, params))

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[Row]:
        """Run one statement and return its rows."""

        def run() -> list[Row]:
            return self._db.execute(sql, params).fetchall()

        return await anyio.to_thread.run_sync(run)

    async def executemany(self, sql: str, seq: Iterable[Any]) -> None:
        """Run one statement once per parameter set."""
        batch = list(seq)
        await anyio.to_thread.run_sync(self._db.executemany, sql, batch)
