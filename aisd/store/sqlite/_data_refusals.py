"""Replies the data side refuses to merge, in the SQLite store: a result echoed for another
owner (``OwnerMismatch``) and a Reuse Multiple Access reply of an unknown shape
(``UnexpectedReply``). Each fails its import, keeps the raw reply for inspection (never for
replay) and pauses the token's refreshes with ``token.refresh_paused``, so that no further
access is spent on the same answer until someone acts."""

from __future__ import annotations

import gzip
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

import aiosqlite

from aisd.kontomatik._models import CommandFailure
from aisd.merge import owner_mismatch
from aisd.store._records import NewEvent
from aisd.store.sqlite._codec import dt_in
from aisd.store.sqlite._data_core import one
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["OWNER_MISMATCH", "RefusalMethods"]

OWNER_MISMATCH = "OwnerMismatch"


class _Core(Protocol):
    """What :class:`RefusalMethods` uses of the store it is mixed into."""

    _reader: aiosqlite.Connection

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def _emit(
        self, db: aiosqlite.Connection, events: Sequence[NewEvent], now: datetime
    ) -> list[int]: ...

    async def _fail(
        self,
        db: aiosqlite.Connection,
        import_id: str,
        failure: CommandFailure,
        *,
        now: datetime,
        polls: int | None,
    ) -> sqlite3.Row: ...


async def _refuse(
    core: _Core,
    db: aiosqlite.Connection,
    import_id: str,
    failure: CommandFailure,
    *,
    raw_reply: bytes | None,
    now: datetime,
    polls: int | None,
) -> None:
    imp = await core._fail(db, import_id, failure, now=now, polls=polls)
    ts = dt_in(now)
    if raw_reply is not None:
        params = {"import_id": import_id, "reason": failure.name, "reply": raw_reply, "now": ts}
        await db.execute(Q["insert_refused_reply"], params)
    token_id = imp["token_id"]
    if token_id is None:
        return
    await db.execute(Q["token_refresh_failed"], {"id": token_id, "now": ts})
    async with db.execute(Q["pause_token_refreshes"], {"id": token_id}) as cursor:
        paused = cursor.rowcount == 1
    if paused:
        event = NewEvent(
            "token.refresh_paused",
            imp["owner_external_id"],
            token_id,
            import_id,
            {"reason": failure.name},
        )
        await core._emit(db, [event], now)


class RefusalMethods:
    """``refuse_foreign_owner`` and ``refuse_reuse_reply``, mixed into
    :class:`~aisd.store.sqlite.SqliteStore`."""

    async def refuse_foreign_owner(
        self: _Core,
        import_id: str,
        owner_echo: str | None,
        *,
        raw_reply: bytes | None,
        now: datetime,
        polls: int,
    ) -> bool:
        """See :meth:`aisd.store.Store.refuse_foreign_owner`. The check only reads: an import
        of the right owner costs no write of its own before its result is stored."""
        found = await one(self._reader, "import_owner_echoes", {"id": import_id})
        if found is None:
            return False
        echo = owner_echo or found["echo"]
        if not owner_mismatch(found["owner_external_id"] or "", echo, found["token_echo"]):
            return False
        failure = CommandFailure(
            OWNER_MISMATCH,
            "Kontomatik filed this import under another ownerExternalId than the one "
            "submitted; nothing was merged (give the widget the same ownerExternalId).",
        )
        async with self._transaction() as db:
            await db.execute(Q["set_import_echo"], {"id": import_id, "echo": echo})
            await _refuse(self, db, import_id, failure, raw_reply=raw_reply, now=now, polls=polls)
        return True

    async def refuse_reuse_reply(
        self: _Core, import_id: str, failure: CommandFailure, *, raw_reply: bytes, now: datetime
    ) -> None:
        """See :meth:`aisd.store.Store.refuse_reuse_reply`; the reply is kept gzip-compressed,
        like every other."""
        kept = gzip.compress(raw_reply)
        async with self._transaction() as db:
            await _refuse(self, db, import_id, failure, raw_reply=kept, now=now, polls=None)

    async def refused_reply(self: _Core, import_id: str) -> tuple[str, bytes] | None:
        """See :meth:`aisd.store.Store.refused_reply`: ``(reason, gzip-compressed reply)``."""
        row = await one(self._reader, "refused_reply", {"import_id": import_id})
        return None if row is None else (row["reason"], bytes(row["reply"]))
