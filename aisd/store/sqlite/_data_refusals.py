"""Replies the data side refuses to merge, in the SQLite store: a result echoed for another
owner (``OwnerMismatch``) and a Reuse Multiple Access reply of an unknown shape
(``UnexpectedReply``). Each fails its import, keeps the raw reply for inspection (never for
replay) and pauses the token's refreshes with ``token.refresh_paused``, so that no further
access is spent on the same answer until someone acts."""

from __future__ import annotations

import gzip
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import aiosqlite

from aisd.kontomatik._models import CommandFailure
from aisd.merge import owner_mismatch
from aisd.phases import Step
from aisd.store._records import Claim, NewEvent
from aisd.store.sqlite._codec import dt_in
from aisd.store.sqlite._data_core import one
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._steps import _fenced_row as fenced_row
from aisd.store.sqlite._steps import finish_failure
from aisd.store.sqlite._sync import emit

__all__ = ["OWNER_MISMATCH", "RefusalMethods", "refuse_reply"]

OWNER_MISMATCH = "OwnerMismatch"
T = TypeVar("T")


class _Core(Protocol):
    """What :class:`RefusalMethods` uses of the store it is mixed into."""

    _reader: aiosqlite.Connection

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def refuse_reply(
    db: sqlite3.Connection,
    claim: Claim,
    failure: CommandFailure,
    *,
    raw_reply: bytes | None,
    now: datetime,
    polls: int | None,
) -> None:
    """Fail a claimed import with ``failure``, keep its reply as refused and pause its token's
    refreshes (``token.refresh_paused``), in the caller's transaction."""
    imp = fenced_row(db, claim, Step.FAIL)
    finish_failure(db, claim, failure, now=now, polls=polls, token=None)
    if raw_reply is not None:
        params = {
            "import_id": claim.import_id,
            "reason": failure.name,
            "reply": raw_reply,
            "now": dt_in(now),
        }
        db.execute(Q["insert_refused_reply"], params)
    token_id = imp["token_id"]
    if token_id is None:
        return
    if db.execute(Q["pause_token_refreshes"], {"id": token_id}).rowcount == 1:
        event = NewEvent(
            "token.refresh_paused",
            imp["owner_external_id"],
            token_id,
            claim.import_id,
            {"reason": failure.name},
        )
        emit(db, [event], now)


class RefusalMethods:
    """``refuse_foreign_owner``, ``refuse_reuse_reply`` and ``refused_reply``, mixed into
    :class:`~aisd.store.sqlite.SqliteStore`."""

    async def refuse_foreign_owner(
        self: _Core,
        claim: Claim,
        owner_echo: str | None,
        *,
        raw_reply: bytes | None,
        now: datetime,
        polls: int,
    ) -> bool:
        """See :meth:`aisd.store.Store.refuse_foreign_owner`. The check only reads: an import
        of the right owner costs no write of its own before its result is stored."""
        found = await one(self._reader, "import_owner_echoes", {"id": claim.import_id})
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

        def refuse(db: sqlite3.Connection) -> None:
            db.execute(Q["set_import_echo"], {"id": claim.import_id, "echo": echo})
            refuse_reply(db, claim, failure, raw_reply=raw_reply, now=now, polls=polls)

        await self._run(refuse)
        return True

    async def refuse_reuse_reply(
        self: _Core, claim: Claim, failure: CommandFailure, *, raw_reply: bytes, now: datetime
    ) -> None:
        """See :meth:`aisd.store.Store.refuse_reuse_reply`; the reply is kept gzip-compressed,
        like every other."""
        kept = gzip.compress(raw_reply)
        await self._run(
            partial(refuse_reply, claim=claim, failure=failure, raw_reply=kept, now=now, polls=None)
        )

    async def refused_reply(self: _Core, import_id: str) -> tuple[str, bytes] | None:
        """See :meth:`aisd.store.Store.refused_reply`: ``(reason, gzip-compressed reply)``."""
        row = await one(self._reader, "refused_reply", {"import_id": import_id})
        return None if row is None else (row["reason"], bytes(row["reply"]))
