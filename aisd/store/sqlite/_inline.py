"""Statements on the event loop's own thread, for a scratch database (``aisd simulate``).

Every aiosqlite call hands its statement to the connection's thread and the result back: two
thread hand-overs that, on a busy machine, cost far more than the statement itself. A scratch
database that one event loop owns and nobody waits on runs its statements inline instead. The
daemon never does: a slow statement there would stall the socket and every other task.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import aiosqlite

__all__ = ["InlineConnection", "connect_inline"]


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the calling thread, no worker thread.

    Args:
        connector: opens the ``sqlite3`` connection.
        yields: let the other tasks run after each call, as an awaited crossing does. The
            store's writer needs none: every call it makes is preceded by a checkpoint of its
            own (the group commit's turn of the event loop, the bulk lock's acquisition).
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], *, yields: bool) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._yields = yields

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        result = fn(*args, **kwargs)
        if self._yields:
            # An awaited crossing lets the other tasks run (and delivers a cancellation) after
            # the statement has run; so does this. aiosqlite runs on asyncio alone, whose
            # checkpoint this is (anyio's own asks which event loop runs on every call).
            await asyncio.sleep(0)
        return result

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def stop(self) -> None:
        """Close the connection (there is no thread to stop)."""
        self._running = False
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        """Close the connection."""
        self.stop()


def connect_inline(path: Path, *, yields: bool = True) -> InlineConnection:
    """``aiosqlite.connect(path, isolation_level=None)``, inline: await it for the open
    connection (in autocommit mode: the store issues its own ``BEGIN``). ``yields``: see
    :class:`InlineConnection`."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(str(path), isolation_level=None)

    return InlineConnection(connector, yields=yields)
