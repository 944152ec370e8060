"""Erasure of an owner and retention of merged data in the SQLite store.

Erasure deletes every row about the owner in one transaction and keeps what is anonymous and
still needed: the tokens' billing facts (id, times, state, and their successful imports copied
into ``billing_imports``), the access ledger (without sessions), the event feed (ids and types,
personal fields stripped, so it stays gap-free) and one tombstone per deleted transaction (so
feed consumers delete their copies too). Then the file is vacuumed and the WAL truncated, so the
bytes are gone from the database file, its WAL and its free pages, not merely unlinked.
"""

from __future__ import annotations

from datetime import date, datetime

from aisd import events as built
from aisd.store._data_records import ForgetOutcome
from aisd.store._requests import PurgeOutcome
from aisd.store.sqlite._codec import dt_in, json_in, json_out
from aisd.store.sqlite._data_core import DataCore, fetch, scalar
from aisd.store.sqlite._errors import ConflictError, NotFoundError
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["PrivacyMethods"]

# Deleted child first; each one's row count adds to rowsDeleted.
_DELETES = (
    "forget_delete_changes",
    "forget_delete_transactions",
    "forget_delete_raw_replies",
    "forget_delete_refused_replies",
    "forget_delete_imports",
    "forget_delete_token_accounts",
    "forget_delete_accounts",
    "forget_delete_sessions",
    "forget_delete_consents",
    "forget_delete_owner",
)


class PrivacyMethods:
    """``forget_owner`` and ``purge``, mixed into both stores."""

    async def forget_owner(
        self: DataCore, owner_external_id: str, *, now: datetime
    ) -> ForgetOutcome:
        """See :meth:`aisd.store.Store.forget_owner`.

        Raises:
            NotFoundError: no owner has this id.
            ConflictError: a token of the owner is still active or an import still open.
        """
        async with self._transaction() as db:
            # Freed pages are zeroed from now on, before VACUUM rewrites the file anyway.
            await db.execute(Q["secure_delete_on"])
            owner_id = await scalar(db, "forget_owner_id", {"external_id": owner_external_id})
            if owner_id is None:
                raise NotFoundError("owner not found")
            blockers = (await fetch(db, "forget_blockers", {"owner_id": owner_id}))[0]
            if blockers["active_tokens"]:
                raise ConflictError("the owner has active tokens; revoke them first")
            if blockers["open_imports"]:
                raise ConflictError("the owner has imports queued or running; retry when they end")
            token_ids = [
                str(r[0]) for r in await fetch(db, "forget_token_ids", {"owner_id": owner_id})
            ]
            tokens = json_in(token_ids)
            import_rows = await fetch(
                db, "forget_import_ids", {"owner_id": owner_id, "token_ids": tokens}
            )
            imports = json_in([str(r[0]) for r in import_rows])
            ids = {"owner_id": owner_id, "token_ids": tokens, "import_ids": imports}
            await db.execute(Q["forget_keep_billing"], ids)
            seq = int(await scalar(db, "get_counter", {"name": "change_seq"}) or 0)
            params = {"owner_id": owner_id, "seq": seq, "now": dt_in(now)}
            async with db.execute(Q["forget_tombstones"], params) as cursor:
                seq += cursor.rowcount
            await db.execute(Q["set_counter"], {"name": "change_seq", "value": seq})
            await db.execute(Q["forget_accesses"], ids)
            events = await fetch(db, "forget_events", {**ids, "external_id": owner_external_id})
            await db.executemany(
                Q["forget_event_update"],
                [
                    (json_in(built.anonymous_event_data(json_out(e["data"]))), e["id"])
                    for e in events
                ],
            )
            deleted = 0
            for name in _DELETES:
                async with db.execute(Q[name], ids) as cursor:
                    deleted += cursor.rowcount
            await db.execute(Q["forget_anonymise_tokens"], ids)
            audit = built.owner_forgotten(
                rows_deleted=deleted, token_ids=token_ids, events_stripped=len(events)
            )
            (event_id,) = await self._emit(db, [audit], now)
        async with self._lock:
            await self._writer.execute(Q["vacuum"])
            emptied = await self._empty_log()
        return ForgetOutcome(
            rows_deleted=deleted,
            token_ids=tuple(token_ids),
            event_id=event_id,
            compacted=emptied,
        )

    async def purge(
        self: DataCore, *, transactions_before: date | None, raw_before: datetime | None
    ) -> PurgeOutcome:
        """See :meth:`aisd.store.Store.purge`."""
        transactions = raw = 0
        async with self._transaction() as db:
            if transactions_before is not None:
                params = {"before": transactions_before.isoformat()}
                await db.execute(Q["purge_transaction_changes"], params)
                async with db.execute(Q["purge_transactions"], params) as cursor:
                    transactions = int(cursor.rowcount)
            if raw_before is not None:
                raw_params = {"older_than": dt_in(raw_before)}
                await db.execute(Q["purge_refused_replies"], raw_params)
                async with db.execute(Q["purge_raw_replies"], raw_params) as cursor:
                    raw = int(cursor.rowcount)
        return PurgeOutcome(transactions=transactions, raw_replies=raw)
