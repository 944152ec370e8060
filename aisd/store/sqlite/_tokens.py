"""Tokens in the store: their records, the next planned refresh and the reuse ledger
(:class:`TokenMethods`, mixed into both stores)."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

import aiosqlite

from aisd.store._records import LedgerEntry, TokenRecord, TokenState
from aisd.store.sqlite._codec import dt_in, dt_out, json_in, json_out, opt_date_out, opt_dt_out
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["TokenMethods", "parse_ledger", "token_record", "token_records"]


# -- pure rules --------------------------------------------------------------------------------


# The token_records columns a record is made of, in _record's order.
_COLUMNS = (
    "token_id",
    "owner_external_id",
    "state",
    "created_at",
    "expires_at",
    "accounts",
    "last_import_at",
    "last_refresh_at",
    "next_refresh_at",
    "plan_reason",
    "failures",
    "upstream_deferred_until",
    "refresh_until",
    "max_imports",
    "imports_done",
    "warned_days",
    "state_reason",
    "ended_at",
)


# By value: a dict lookup costs a fraction of the enum's call, and a tick converts hundreds of rows.
_STATES = {state.value: state for state in TokenState}


def token_records(found: Sequence[sqlite3.Row]) -> list[TokenRecord]:
    """Rows of the ``token_records`` view as :class:`TokenRecord` objects. Columns are found
    by name once for all the rows: a name lookup in a row compares it with every column
    name, and a tick converts hundreds of rows of twenty columns."""
    if not found:
        return []
    names = list(found[0].keys())
    pick = operator.itemgetter(*(names.index(column) for column in _COLUMNS))
    return [_record(*pick(row)) for row in found]


def token_record(row: sqlite3.Row) -> TokenRecord:
    """A row of the ``token_records`` view as a :class:`TokenRecord`."""
    return token_records([row])[0]


def _record(
    token_id: str,
    owner_external_id: str | None,
    state: str,
    created_at: str,
    expires_at: str,
    accounts: str,
    last_import_at: str | None,
    last_refresh_at: str | None,
    next_refresh_at: str | None,
    plan_reason: str | None,
    failures: int,
    upstream_deferred_until: str | None,
    refresh_until: str | None,
    max_imports: int | None,
    imports_done: int,
    warned_days: str,
    state_reason: str | None,
    ended_at: str | None,
) -> TokenRecord:
    return TokenRecord(
        token_id=token_id,
        # Empty once the owner is forgotten: the token stays, anonymous, for billing.
        owner_external_id=owner_external_id or "",
        state=_STATES[state],
        created_at=dt_out(created_at),
        expires_at=dt_out(expires_at),
        accounts=frozenset(json_out(accounts)),
        last_import_at=opt_dt_out(last_import_at),
        last_refresh_at=opt_dt_out(last_refresh_at),
        next_refresh_at=opt_dt_out(next_refresh_at),
        plan_reason=plan_reason,
        failures=failures,
        upstream_deferred_until=opt_dt_out(upstream_deferred_until),
        refresh_until=opt_date_out(refresh_until),
        max_imports=max_imports,
        imports_done=imports_done,
        warned_days=_warned_days(warned_days),
        state_reason=state_reason,
        ended_at=opt_dt_out(ended_at),
    )


def parse_ledger(
    found: Iterable[sqlite3.Row],
) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
    """Rows of the ``reuse_ledger`` query as the ledger (ascending in time) and each token's
    accounts (an empty set while unknown)."""
    ledger: list[LedgerEntry] = []
    accounts: dict[str, set[str]] = {}
    # By position (what, token_id, value): a name lookup in a row compares it with every column
    # name, and a tick reads a thousand rows.
    for what, token_id, value in found:
        if what == "access":
            ledger.append(LedgerEntry(token_id, dt_out(value)))
            continue
        ibans = accounts.setdefault(token_id, set())
        if value is not None:
            ibans.add(value)
    ledger.sort(key=lambda entry: (entry.at, entry.token_id))
    return ledger, {token_id: frozenset(ibans) for token_id, ibans in accounts.items()}


def _warned_days(value: str) -> tuple[int, ...]:
    # Most tokens have raised none: a tick converts hundreds of rows, and parsing is the cost.
    return () if value == "[]" else tuple(sorted(json_out(value), reverse=True))


# -- the SQL shell -----------------------------------------------------------------------------


class _Core(Protocol):
    """What :class:`TokenMethods` uses of the store it is mixed into."""

    _reader: aiosqlite.Connection


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
        return token_records(list(rows))

    async def reuse_ledger(
        self: _Core, token_ids: Sequence[str], *, since: datetime
    ) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
        """See :meth:`aisd.store.Store.reuse_ledger`. Every asked token is in the mapping
        (with an empty set while its accounts are unknown); the ledger ascends in time."""
        params = {"token_ids": json_in(list(token_ids)), "since": dt_in(since)}
        return parse_ledger(await self._reader.execute_fetchall(Q["reuse_ledger"], params))
