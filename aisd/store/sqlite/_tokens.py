"""Tokens and the planner in the SQLite store: listing, due tokens, the reuse ledger, plans,
expiry, expiry warnings and the end of a token.

The rules that need no database are the pure functions at the top; :class:`TokenMethods` is
the thin layer that runs them against SQL, mixed into :class:`~aisd.store.sqlite.SqliteStore`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

import aiosqlite

from aisd.clock import iso
from aisd.kontomatik._models import CommandFailure
from aisd.store._records import LedgerEntry, NewEvent, TokenRecord, TokenState
from aisd.store.sqlite._codec import dt_in, dt_out, json_in, json_out, opt_date_out, opt_dt_out
from aisd.store.sqlite._data_core import one
from aisd.store.sqlite._errors import NotFoundError
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["TokenMethods", "ended_refresh_failure", "token_record", "warning_schedule"]


# -- pure rules --------------------------------------------------------------------------------


def token_record(row: sqlite3.Row) -> TokenRecord:
    """A row of the ``token_records`` view as a :class:`TokenRecord`."""
    return TokenRecord(
        token_id=row["token_id"],
        # Empty once the owner is forgotten: the token stays, anonymous, for billing.
        owner_external_id=row["owner_external_id"] or "",
        state=TokenState(row["state"]),
        created_at=dt_out(row["created_at"]),
        expires_at=dt_out(row["expires_at"]),
        accounts=frozenset(json_out(row["accounts"])),
        last_import_at=opt_dt_out(row["last_import_at"]),
        last_refresh_at=opt_dt_out(row["last_refresh_at"]),
        next_refresh_at=opt_dt_out(row["next_refresh_at"]),
        plan_reason=row["plan_reason"],
        failures=row["failures"],
        upstream_deferred_until=opt_dt_out(row["upstream_deferred_until"]),
        refresh_until=opt_date_out(row["refresh_until"]),
        max_imports=row["max_imports"],
        imports_done=row["imports_done"],
        warned_days=_warned_days(row["warned_days"]),
        state_reason=row["state_reason"],
        ended_at=opt_dt_out(row["ended_at"]),
    )


def _warned_days(value: str) -> tuple[int, ...]:
    # Most tokens have raised none: a tick converts hundreds of rows, and parsing is the cost.
    return () if value == "[]" else tuple(sorted(json_out(value), reverse=True))


def warning_schedule(
    expires_at: datetime, days: Collection[int], warned: Collection[int], now: datetime
) -> tuple[list[int], datetime | None]:
    """Which ``token.expiring`` thresholds are due and when the next one passes.

    Args:
        expires_at: the token's end.
        days: the thresholds, in days before ``expires_at``.
        warned: thresholds already raised.
        now: the current time.

    Returns:
        The due thresholds (passed, not raised), largest first, and the time the largest
        threshold not raised yet passes (None when every threshold has been raised).
    """
    pending = sorted(set(days) - set(warned), reverse=True)
    due = [day for day in pending if expires_at - timedelta(days=day) <= now]
    return due, (expires_at - timedelta(days=pending[0]) if pending else None)


def ended_refresh_failure(state: TokenState) -> CommandFailure:
    """The failure of a queued refresh whose token has left ``active``: ``TokenRevoked``,
    ``TokenExpired`` or ``TokenReauthRequired``."""
    words = TokenState(state).value.split("_")
    name = "Token" + "".join(word.title() for word in words)
    return CommandFailure(name, f"The token is {state.value}; the refresh was not started.")


# -- the SQL shell -----------------------------------------------------------------------------


class _Core(Protocol):
    """What :class:`TokenMethods` uses of the store it is mixed into."""

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


async def _brief(db: aiosqlite.Connection, token_id: str) -> sqlite3.Row:
    row = await one(db, "token_brief", {"id": token_id})
    if row is None:
        raise NotFoundError(f"token {token_id} not found")
    return row


async def _end(
    core: _Core,
    db: aiosqlite.Connection,
    token_id: str,
    state: TokenState,
    *,
    reason: str,
    now: datetime,
    event: NewEvent,
) -> bool:
    """Move an active token to ``state``, append ``event`` and fail its queued refreshes."""
    params = {"id": token_id, "state": state.value, "reason": reason, "now": dt_in(now)}
    async with db.execute(Q["end_token"], params) as cursor:
        if cursor.rowcount != 1:
            return False
    await core._emit(db, [event], now)
    failure = ended_refresh_failure(state)
    for row in await db.execute_fetchall(Q["queued_refreshes_of_token"], {"token_id": token_id}):
        await core._fail(db, row["id"], failure, now=now, polls=None)
    return True


class TokenMethods:
    """The "tokens and the planner" part of :class:`aisd.store.Store` for SQLite."""

    async def list_tokens(
        self: _Core,
        *,
        owner_external_id: str | None = None,
        state: TokenState | None = None,
        token_ids: Sequence[str] | None = None,
    ) -> list[TokenRecord]:
        """See :meth:`aisd.store.Store.list_tokens`."""
        params = {
            "owner_external_id": owner_external_id,
            "state": None if state is None else TokenState(state).value,
        }
        query = Q["list_token_records"]
        if token_ids is not None:
            query = Q["token_records_by_ids"]
            params["token_ids"] = json_in(list(token_ids))
        rows = await self._reader.execute_fetchall(query, params)
        return [token_record(row) for row in rows]

    async def due_tokens(self: _Core, *, now: datetime, limit: int) -> list[TokenRecord]:
        """See :meth:`aisd.store.Store.due_tokens`."""
        params = {"now": dt_in(now), "limit": limit}
        rows = await self._reader.execute_fetchall(Q["due_token_records"], params)
        return [token_record(row) for row in rows]

    async def next_refresh_due(self: _Core) -> datetime | None:
        """See :meth:`aisd.store.Store.next_refresh_due`."""
        row = await one(self._reader, "next_refresh_due", ())
        return None if row is None else dt_out(row["next_refresh_at"])

    async def reuse_ledger(
        self: _Core, token_ids: Sequence[str], *, since: datetime
    ) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
        """See :meth:`aisd.store.Store.reuse_ledger`. Every asked token is in the mapping
        (with an empty set while its accounts are unknown); the ledger ascends in time."""
        params = {"token_ids": json_in(list(token_ids)), "since": dt_in(since)}
        ledger: list[LedgerEntry] = []
        accounts: dict[str, set[str]] = {}
        for row in await self._reader.execute_fetchall(Q["reuse_ledger"], params):
            if row["what"] == "access":
                ledger.append(LedgerEntry(row["token_id"], dt_out(row["value"])))
                continue
            ibans = accounts.setdefault(row["token_id"], set())
            if row["value"] is not None:
                ibans.add(row["value"])
        ledger.sort(key=lambda entry: (entry.at, entry.token_id))
        return ledger, {token_id: frozenset(ibans) for token_id, ibans in accounts.items()}

    async def set_plan(
        self: _Core,
        token_id: str,
        *,
        at: datetime | None,
        reason: str,
        now: datetime,
        event: NewEvent | None = None,
    ) -> None:
        """See :meth:`aisd.store.Store.set_plan`. A token that is no longer active keeps no
        plan: nothing changes and the event is not appended.

        Raises:
            NotFoundError: the token is unknown.
        """
        params = {"id": token_id, "at": None if at is None else dt_in(at), "reason": reason}
        async with self._transaction() as db:
            async with db.execute(Q["set_plan"], params) as cursor:
                planned = cursor.rowcount == 1
            if not planned:
                await _brief(db, token_id)
                return
            if event is not None:
                await self._emit(db, [event], now)

    async def expire_tokens(self: _Core, *, now: datetime) -> list[str]:
        """See :meth:`aisd.store.Store.expire_tokens`. Queued refreshes fail as
        ``TokenExpired``; imports already past the queue are left to finish."""
        expired: list[str] = []
        async with self._transaction() as db:
            rows = await db.execute_fetchall(Q["tokens_past_expiry"], {"now": dt_in(now)})
            for row in rows:
                event = NewEvent(
                    "token.expired",
                    row["owner_external_id"],
                    row["id"],
                    data={"expiresAt": iso(dt_out(row["expires_at"]))},
                )
                state = TokenState.EXPIRED
                if await _end(self, db, row["id"], state, reason="expired", now=now, event=event):
                    expired.append(row["id"])
        return expired

    async def warnings_due(self: _Core, *, now: datetime, days: Sequence[int]) -> list[TokenRecord]:
        """See :meth:`aisd.store.Store.warnings_due`.

        Only tokens whose ``next_warning_at`` has passed are looked at (an index range). Those
        with nothing due after all get ``next_warning_at`` moved to their next threshold, so
        this call writes; those returned keep it until their thresholds are raised and a later
        call moves it on.
        """
        due: list[TokenRecord] = []
        async with self._transaction() as db:
            for row in await db.execute_fetchall(Q["warning_candidates"], {"now": dt_in(now)}):
                token = token_record(row)
                thresholds, next_at = warning_schedule(
                    token.expires_at, days, token.warned_days, now
                )
                if thresholds:
                    due.append(token)
                    continue
                params = {
                    "id": token.token_id,
                    "next_warning_at": None if next_at is None else dt_in(next_at),
                }
                await db.execute(Q["set_next_warning"], params)
        return due

    async def record_warning(self: _Core, token_id: str, day: int, *, now: datetime) -> None:
        """See :meth:`aisd.store.Store.record_warning`. Nothing happens for a token that is no
        longer active.

        Raises:
            NotFoundError: the token is unknown.
        """
        async with self._transaction() as db:
            token = await _brief(db, token_id)
            if token["state"] != TokenState.ACTIVE.value:
                return
            params = {"token_id": token_id, "day": day, "now": dt_in(now)}
            async with db.execute(Q["insert_token_warning"], params) as cursor:
                raised = cursor.rowcount == 1
            if raised:
                data = {"daysBefore": day, "expiresAt": iso(dt_out(token["expires_at"]))}
                event = NewEvent("token.expiring", token["owner_external_id"], token_id, data=data)
                await self._emit(db, [event], now)

    async def end_token(
        self: _Core, token_id: str, state: TokenState, *, now: datetime, reason: str
    ) -> bool:
        """See :meth:`aisd.store.Store.end_token`. The token's secret is dropped with the
        state; imports already past the queue are left to finish.

        Raises:
            ValueError: ``state`` is ``active`` (not an end).
            NotFoundError: the token is unknown.
        """
        final = TokenState(state)
        if final == TokenState.ACTIVE:
            raise ValueError("end_token needs a final state")
        async with self._transaction() as db:
            token = await _brief(db, token_id)
            event = NewEvent(
                f"token.{final.value}",
                token["owner_external_id"],
                token_id,
                data={"reason": reason},
            )
            return await _end(self, db, token_id, final, reason=reason, now=now, event=event)
