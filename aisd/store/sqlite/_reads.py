"""The read side of the stores: what the socket, status, metrics and replay read."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from functools import partial

import aiosqlite

from aisd.store._records import (
    EventRecord,
    ImportError_,
    ImportKind,
    ImportRecord,
    ImportState,
    TokenState,
)
from aisd.store._requests import (
    AccountView,
    EventPage,
    ImportQuery,
    OwnerView,
    ReplayBatch,
    StoreStatus,
)
from aisd.store.sqlite._analytics import owner_scores
from aisd.store.sqlite._codec import (
    dec_out,
    dt_in,
    dt_out,
    json_out,
    opt_dt_out,
    stored_transaction,
)
from aisd.store.sqlite._data_core import DataCore, fetch, one, scalar
from aisd.store.sqlite._data_merge import account_owners, credit_cards
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._sync import rows

__all__ = ["ReadMethods"]

# How far back daemon.status looks for the last successful import (bounded: an index range).
RECENT_DAYS = 30


def _record(row: sqlite3.Row) -> ImportRecord:
    error = None
    if row["error_name"] is not None:
        error = ImportError_(name=row["error_name"], message=row["error_message"] or "")
    return ImportRecord(
        import_id=row["id"],
        # Empty once the owner is forgotten: the import stays, anonymous, for billing.
        owner_external_id=row["owner_external_id"] or "",
        token_id=row["token_id"],
        kind=ImportKind(row["kind"]),
        state=ImportState(row["state"]),
        command_id=row["command_id"],
        created_at=dt_out(row["created_at"]),
        started_at=opt_dt_out(row["started_at"]),
        finished_at=opt_dt_out(row["finished_at"]),
        polls=row["polls"],
        accounts=row["accounts"],
        transactions=row["transactions"],
        error=error,
        since=date.fromisoformat(row["since"]),
        owner_echo=row["owner_echo"],
        token_echo=row["token_echo"],
    )


def _event(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        id=row["id"],
        at=dt_out(row["at"]),
        type=row["type"],
        owner_external_id=row["owner_external_id"],
        token_id=row["token_id"],
        import_id=row["import_id"],
        data=json_out(row["data"]),
        origin=row["origin"],
    )


def _event_page(after: int, limit: int, db: sqlite3.Connection) -> EventPage:
    head = db.execute(Q["last_event_id"]).fetchone()
    found = db.execute(Q["list_events"], {"after": after, "limit": limit}).fetchall()
    events = tuple(_event(row) for row in found)
    newest = 0 if head is None or head[0] is None else int(head[0])
    return EventPage(events, max([newest, *(e.id for e in events)]))


async def _accounts(db: aiosqlite.Connection, owner_external_id: str) -> list[AccountView]:
    owners_of = await account_owners(db, owner_external_id)
    out = []
    for row in await fetch(db, "owner_accounts", {"external_id": owner_external_id}):
        details: dict[str, object] = {
            "iban": row["iban"],
            "name": row["name"],
            "currencyName": row["currency_name"],
            "currencyBalance": dec_out(row["balance"]),
            "currencyFundsAvailable": dec_out(row["funds_available"]),
            "updatedAt": dt_out(row["updated_at"]),
        }
        params = {"external_id": owner_external_id, "iban": row["iban"]}
        transactions = tuple(
            stored_transaction(tx) for tx in await fetch(db, "account_view", params)
        )
        owners = tuple(owners_of.get(row["iban"], []))
        out.append(AccountView(details=details, owners=owners, transactions=transactions))
    return out


class ReadMethods:
    """Reads for the socket, status, metrics and replay, mixed into both stores."""

    async def imports(self: DataCore, query: ImportQuery) -> list[ImportRecord]:
        """See :meth:`aisd.store.Store.imports`."""
        if query.import_id is not None:
            row = await one(self._reader, "import_record", {"id": query.import_id})
            return [] if row is None else [_record(row)]
        params = {
            "owner_external_id": query.owner_external_id,
            "token_id": query.token_id,
            "state": None if query.state is None else ImportState(query.state).value,
            "kind": None if query.kind is None else ImportKind(query.kind).value,
            "limit": query.limit,
        }
        if query.token_id is not None:
            name = "list_import_records_of_token"
        elif query.owner_external_id is not None:
            name = "list_import_records_of_owner"
        elif query.state is not None:
            name = "list_import_records_in_state"
        else:
            name = "list_import_records"
        rows = await self._reader.execute_fetchall(Q[name], params)
        return [_record(row) for row in rows]

    async def owner(self: DataCore, owner_external_id: str) -> OwnerView | None:
        """See :meth:`aisd.store.Store.owner`. Amounts are ``Decimal``, ``updatedAt`` a
        tz-aware UTC ``datetime``."""
        db = self._reader
        row = await one(db, "owner_has_consent", {"external_id": owner_external_id})
        if row is None or not row[0]:
            return None
        found = await one(db, "owner_persons", {"external_id": owner_external_id})
        persons: list[dict[str, str | None]] = []
        if found is not None and found["persons"] is not None:
            persons = json_out(found["persons"])
        return OwnerView(
            owners=tuple(persons),
            accounts=tuple(await _accounts(db, owner_external_id)),
            cards=tuple(await credit_cards(db, owner_external_id)),
            scores=tuple(await owner_scores(db, owner_external_id)),
        )

    async def events(self: DataCore, *, after: int, limit: int) -> EventPage:
        """See :meth:`aisd.store.Store.events`. The head and the page are read in one
        snapshot, in one call on the reader's thread (the event log reads a page after every
        commit that appended events: thousands a second under intake)."""
        return await self._read(partial(_event_page, after, limit))

    async def status(
        self: DataCore,
        *,
        now: datetime,
        expiring_within: timedelta | None = None,
        stale_after: timedelta | None = None,
    ) -> StoreStatus:
        """See :meth:`aisd.store.Store.status`; every state is present, zero when unused. One
        read (it runs after every tick: five round trips to the reader's thread cost ten times
        the queries)."""
        params = {
            "horizon": dt_in(now - timedelta(days=RECENT_DAYS)),
            "hour_ago": dt_in(now - timedelta(hours=1)),
            # An import that failed in the last hour was created at most a day earlier.
            "window": dt_in(now - timedelta(days=1)),
        }
        until = None if expiring_within is None else {"until": dt_in(now + expiring_within)}
        cutoff = None if stale_after is None else {"cutoff": dt_in(now - stale_after)}
        return await self._read(partial(_status, params, until, cutoff))

    async def raw_replies(self: DataCore, *, after_owner: str | None) -> ReplayBatch | None:
        """See :meth:`aisd.store.Store.raw_replies`; replies are gzip-compressed."""
        db = self._reader
        owner = await scalar(db, "replay_owner_after", {"after": after_owner or ""})
        if owner is None:
            return None
        found = await fetch(db, "list_raw_replies", {"external_id": owner})
        replies = tuple(
            (row["import_id"], date.fromisoformat(row["coverage_start"]), bytes(row["reply"]))
            for row in found
        )
        return ReplayBatch(str(owner), replies)

    async def multiple_access_id(self: DataCore, token_id: str) -> str | None:
        """The token's secret, for Revoke Multiple Access Consent; None when unknown."""
        row = await one(self._reader, "token_secret", {"id": token_id})
        return None if row is None else row["multiple_access_id"]


def _status(
    recent_params: dict[str, str],
    until: dict[str, str] | None,
    cutoff: dict[str, str] | None,
    db: sqlite3.Connection,
) -> StoreStatus:
    tokens = {state.value: 0 for state in TokenState}
    imports = {state.value: 0 for state in ImportState}
    for row in rows(db, "count_tokens"):
        tokens[row["state"]] = row["n"]
    for row in rows(db, "count_imports"):
        imports[row["state"]] = row["n"]
    recent = rows(db, "recent_activity", recent_params)[0]
    open_imports = {
        (str(row["kind"]), str(row["state"])): int(row["n"])
        for row in rows(db, "metrics_open_imports")
    }
    expiring = stale = None
    if until is not None:
        expiring = int(rows(db, "metrics_tokens_expiring", until)[0][0] or 0)
    if cutoff is not None:
        stale = int(rows(db, "metrics_tokens_stale", cutoff)[0][0] or 0)
    head = rows(db, "last_event_id")[0][0]
    return StoreStatus(
        tokens=tokens,
        imports=imports,
        last_success_at=opt_dt_out(recent["last_success"]),
        failed_last_hour=int(recent["failed_last_hour"]),
        open_imports=open_imports,
        tokens_expiring=expiring,
        tokens_stale=stale,
        event_head=int(head or 0),
    )
