"""A token's life in the store: what is due (expiry, expiry warnings) and the lifecycle writes
the domain computed from it (:mod:`aisd.events` builds their events). Shared by both backends,
each write run as one transaction through the store's ``_run``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import aiosqlite

from aisd import events
from aisd.store._records import TokenState
from aisd.store._requests import (
    LifecycleDue,
    LifecycleWrite,
    TokenEnd,
    TokenWarned,
)
from aisd.store.sqlite._codec import dt_in, json_in
from aisd.store.sqlite._errors import NotFoundError
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._steps import fail_import
from aisd.store.sqlite._sync import emit, rows
from aisd.store.sqlite._tokens import token_records

__all__ = ["LifecycleMethods", "record_lifecycle"]

T = TypeVar("T")


class _Core(Protocol):
    """What :class:`LifecycleMethods` uses of the store it is mixed into."""

    _reader: aiosqlite.Connection

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def _brief(db: sqlite3.Connection, token_id: str) -> sqlite3.Row:
    found = rows(db, "token_brief", {"id": token_id})
    if not found:
        raise NotFoundError(f"token {token_id} not found")
    return found[0]


def _end(db: sqlite3.Connection, write: TokenEnd, *, now: datetime) -> bool:
    token = _brief(db, write.token_id)
    final = TokenState(write.state)
    params = {"id": write.token_id, "state": final.value, "reason": write.reason, "now": dt_in(now)}
    if db.execute(Q["end_token"], params).rowcount != 1:
        return False
    emit(db, [write.event], now)
    for row in rows(db, "queued_refreshes_of_token", {"token_id": write.token_id}):
        failed = events.import_failed(
            owner_external_id=token["owner_external_id"],
            token_id=write.token_id,
            import_id=row["id"],
            failure=write.refresh_failure,
            polls=row["polls"],
        )
        fail_import(db, row["id"], write.refresh_failure, now=now, polls=None, event=failed)
    return True


def _warned(db: sqlite3.Connection, write: TokenWarned, *, now: datetime) -> bool:
    if _brief(db, write.token_id)["state"] != TokenState.ACTIVE.value:
        return False
    params = {"token_id": write.token_id, "day": write.day, "now": dt_in(now)}
    if db.execute(Q["insert_token_warning"], params).rowcount != 1:
        return False
    emit(db, [write.event], now)
    return True


def record_lifecycle(
    db: sqlite3.Connection, writes: Sequence[LifecycleWrite], *, now: datetime
) -> list[bool]:
    """Record lifecycle writes in the caller's transaction; per write, whether it changed
    anything."""
    out: list[bool] = []
    for write in writes:
        if isinstance(write, TokenEnd):
            out.append(_end(db, write, now=now))
        elif isinstance(write, TokenWarned):
            out.append(_warned(db, write, now=now))
        else:
            at = None if write.at is None else dt_in(write.at)
            params = {"id": write.token_id, "next_warning_at": at}
            out.append(db.execute(Q["set_next_warning"], params).rowcount == 1)
    return out


def _due(db: sqlite3.Connection, *, now: datetime) -> LifecycleDue:
    ts = dt_in(now)
    expired_ids = [row["id"] for row in rows(db, "tokens_past_expiry", {"now": ts})]
    expired: list[sqlite3.Row] = []
    if expired_ids:
        params = {"token_ids": json_in(expired_ids), "owner_external_id": None, "state": None}
        by_id = {row["token_id"]: row for row in rows(db, "token_records_by_ids", params)}
        expired = [by_id[token_id] for token_id in expired_ids if token_id in by_id]
    return LifecycleDue(
        expired=tuple(token_records(expired)),
        warnable=tuple(token_records(rows(db, "warning_candidates", {"now": ts}))),
    )


class LifecycleMethods:
    """``lifecycle_due`` and ``record_lifecycle``, mixed into both stores."""

    async def lifecycle_due(self: _Core, *, now: datetime) -> LifecycleDue:
        """See :meth:`aisd.store.Store.lifecycle_due`. Read inside a write transaction, as
        the expiry it leads to is written: a database that takes no writes fails the tick
        here, so the planner goes stale (and the watchdog says so) instead of looking well."""
        return await self._run(partial(_due, now=now))

    async def record_lifecycle(
        self: _Core, writes: Sequence[LifecycleWrite], *, now: datetime
    ) -> list[bool]:
        """See :meth:`aisd.store.Store.record_lifecycle`."""
        if not writes:
            return []
        return await self._run(partial(record_lifecycle, writes=writes, now=now))
