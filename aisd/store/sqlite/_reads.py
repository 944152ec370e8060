"""The read side of the SQLite store (what the socket shows), and the event feed's appends."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from aisd.store._records import (
    EventRecord,
    ImportError_,
    ImportKind,
    ImportRecord,
    ImportState,
    NewEvent,
    StoredTransaction,
    TokenState,
)
from aisd.store.sqlite._codec import (
    dec_out,
    dt_in,
    dt_out,
    json_out,
    opt_dt_out,
    stored_transaction,
)
from aisd.store.sqlite._data_core import DataCore, one
from aisd.store.sqlite._queries import QUERIES as Q

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
    )


class ReadMethods:
    """Reads for the socket and the event feed, mixed into
    :class:`~aisd.store.sqlite.SqliteStore`."""

    async def get_import(self: DataCore, import_id: str) -> ImportRecord | None:
        """See :meth:`aisd.store.Store.get_import`."""
        row = await one(self._reader, "import_record", {"id": import_id})
        return None if row is None else _record(row)

    async def list_imports(
        self: DataCore,
        *,
        owner_external_id: str | None = None,
        token_id: str | None = None,
        state: ImportState | None = None,
        kind: ImportKind | None = None,
        limit: int = 100,
    ) -> list[ImportRecord]:
        """See :meth:`aisd.store.Store.list_imports`."""
        params = {
            "owner_external_id": owner_external_id,
            "token_id": token_id,
            "state": None if state is None else ImportState(state).value,
            "kind": None if kind is None else ImportKind(kind).value,
            "limit": limit,
        }
        rows = await self._reader.execute_fetchall(Q["list_import_records"], params)
        return [_record(row) for row in rows]

    async def owner_exists(self: DataCore, owner_external_id: str) -> bool:
        """See :meth:`aisd.store.Store.owner_exists`."""
        row = await one(self._reader, "owner_has_consent", {"external_id": owner_external_id})
        return row is not None and bool(row[0])

    async def owner_details(self: DataCore, owner_external_id: str) -> list[dict[str, str | None]]:
        """See :meth:`aisd.store.Store.owner_details`."""
        row = await one(self._reader, "owner_persons", {"external_id": owner_external_id})
        if row is None or row["persons"] is None:
            return []
        persons: list[dict[str, str | None]] = json_out(row["persons"])
        return persons

    async def accounts(self: DataCore, owner_external_id: str) -> list[dict[str, object]]:
        """See :meth:`aisd.store.Store.accounts`. Amounts are ``Decimal``, ``updatedAt`` a
        tz-aware UTC ``datetime``."""
        rows = await self._reader.execute_fetchall(
            Q["owner_accounts"], {"external_id": owner_external_id}
        )
        return [
            {
                "iban": row["iban"],
                "name": row["name"],
                "currencyName": row["currency_name"],
                "currencyBalance": dec_out(row["balance"]),
                "currencyFundsAvailable": dec_out(row["funds_available"]),
                "updatedAt": dt_out(row["updated_at"]),
            }
            for row in rows
        ]

    async def transactions(
        self: DataCore, owner_external_id: str, iban: str
    ) -> list[StoredTransaction]:
        """See :meth:`aisd.store.Store.transactions`."""
        rows = await self._reader.execute_fetchall(
            Q["account_view"], {"external_id": owner_external_id, "iban": iban}
        )
        return [stored_transaction(row) for row in rows]

    async def append_events(
        self: DataCore, events: Sequence[NewEvent], *, now: datetime
    ) -> list[int]:
        """See :meth:`aisd.store.Store.append_events`."""
        async with self._transaction() as db:
            return await self._emit(db, events, now)

    async def last_event_id(self: DataCore) -> int:
        """The newest event's id, 0 when the feed is empty: where a follower starts."""
        row = await one(self._reader, "last_event_id")
        return 0 if row is None else int(row[0])

    async def list_events(self: DataCore, *, after: int, limit: int) -> list[EventRecord]:
        """See :meth:`aisd.store.Store.list_events`."""
        rows = await self._reader.execute_fetchall(
            Q["list_events"], {"after": after, "limit": limit}
        )
        out: list[EventRecord] = []
        for row in rows:
            out.append(
                EventRecord(
                    id=row["id"],
                    at=dt_out(row["at"]),
                    type=row["type"],
                    owner_external_id=row["owner_external_id"],
                    token_id=row["token_id"],
                    import_id=row["import_id"],
                    data=json_out(row["data"]),
                    origin=row["origin"],
                )
            )
        return out

    async def counts(self: DataCore) -> dict[str, dict[str, int]]:
        """See :meth:`aisd.store.Store.counts`; every state is present, zero when unused."""
        tokens = {state.value: 0 for state in TokenState}
        imports = {state.value: 0 for state in ImportState}
        for row in await self._reader.execute_fetchall(Q["count_tokens"]):
            tokens[row["state"]] = row["n"]
        for row in await self._reader.execute_fetchall(Q["count_imports"]):
            imports[row["state"]] = row["n"]
        return {"tokens": tokens, "imports": imports}

    async def recent_activity(self: DataCore, *, now: datetime) -> tuple[datetime | None, int]:
        """See :meth:`aisd.store.Store.recent_activity`."""
        params = {
            "horizon": dt_in(now - timedelta(days=RECENT_DAYS)),
            "hour_ago": dt_in(now - timedelta(hours=1)),
            # An import that failed in the last hour was created at most a day earlier.
            "window": dt_in(now - timedelta(days=1)),
        }
        row = await one(self._reader, "recent_activity", params)
        assert row is not None
        return opt_dt_out(row["last_success"]), int(row["failed_last_hour"])

    async def token_state(self: DataCore, token_id: str) -> TokenState | None:
        """See :meth:`aisd.store.Store.token_state`."""
        row = await one(self._reader, "token_state", {"id": token_id})
        return None if row is None else TokenState(row["state"])

    async def multiple_access_id(self: DataCore, token_id: str) -> str | None:
        """The token's secret, for Revoke Multiple Access Consent; None when unknown."""
        row = await one(self._reader, "token_secret", {"id": token_id})
        return None if row is None else row["multiple_access_id"]
