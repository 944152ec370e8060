"""The merge of a reply into the stored view (one plain function, run in the writer's
transaction), and the reads of what only the data side keeps (credit cards, account owners),
used by both stores.

Accounts and credit cards are rows of the same ``accounts`` table (``kind`` says which, ``key``
is the IBAN or the card's id), so their transactions share the merge, the change feed, erasure
and retention. Each one's rows are merged over the dates :func:`aisd.merge.coverages` says the
reply covers, never simply from its ``since``.
"""

from __future__ import annotations

import sqlite3
from datetime import date
from typing import Any

import aiosqlite

from aisd.kontomatik._models import Account, CreditCard, ImportResult
from aisd.merge import Coverage, container_key
from aisd.store._records import MergeStats
from aisd.store._requests import CardView
from aisd.store.sqlite._codec import date_in, dec_in, dec_out, dt_out, json_in, json_out
from aisd.store.sqlite._codec import stored_transaction as _stored_transaction
from aisd.store.sqlite._data_codec import owners_json
from aisd.store.sqlite._data_core import fetch
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._sync import returning_id, rows
from aisd.store.sqlite._writes import plan_account_writes

__all__ = ["account_owners", "container_params", "credit_cards", "merge"]

_CHANGE_SEQ = "change_seq"


def container_params(item: Account | CreditCard, owner_id: int, now: str) -> dict[str, Any]:
    """The ``upsert_container`` parameters of an account or a card."""
    kind, key = container_key(item)
    common = {
        "owner_id": owner_id,
        "kind": kind,
        "key": key,
        "name": item.name,
        "currency_name": item.currency_name,
        "balance": dec_in(item.balance),
        "funds_available": dec_in(item.funds_available),
        "partial_due_to_timeout": item.partial_due_to_timeout,
        "owners": json_in(owners_json(item.owners)),
        "now": now,
    }
    if isinstance(item, Account):
        return {
            **common,
            "iban": item.iban,
            "friendly_name": item.friendly_name,
            "active_since_at_least": date_in(item.active_since_at_least),
            "direct_debit": item.direct_debit,
            "card_id": None,
            "number": None,
            "card_limit": None,
            "interest": None,
            "due_date": None,
            "card_owner": None,
        }
    return {
        **common,
        "iban": item.iban,
        "friendly_name": None,
        "active_since_at_least": None,
        "direct_debit": None,
        "card_id": item.card_id,
        "number": item.number,
        "card_limit": dec_in(item.limit),
        "interest": dec_in(item.interest),
        "due_date": date_in(item.due_date),
        "card_owner": item.owner,
    }


def merge(
    db: sqlite3.Connection,
    owner_id: int,
    import_id: str,
    result: ImportResult,
    coverage: Coverage | date,
    ts: str,
) -> MergeStats:
    """Merge every account and card of ``result`` into the merged view, inside the caller's
    transaction; ``coverage`` is where each one's truth begins (one date for all: replay's
    merge of a rebuilt view over all dates). Change sequence values come from the counter row.
    """
    found = rows(db, "get_counter", {"name": _CHANGE_SEQ})
    seq = 0 if not found else int(found[0][0])
    added = modified = removed = 0
    for item in result.containers:
        account_id = returning_id(db, "upsert_container", container_params(item, owner_id, ts))
        start = coverage if isinstance(coverage, date) else coverage[container_key(item)]
        # Stored rows dated before both the coverage and every incoming row can neither
        # match nor be removed: leaving them out changes no plan, and keeps a refresh's
        # merge to its few days instead of the container's whole history.
        floor = min([start, *(tx.transaction_on for tx in item.transactions)])
        stored = db.execute(Q["stored_transactions"], (account_id, date_in(floor))).fetchall()
        writes = plan_account_writes(
            stored,
            item.transactions,
            coverage_start=start,
            account_id=account_id,
            import_id=import_id,
            now=ts,
            seq=seq,
        )
        db.executemany(Q["insert_transaction"], writes.inserts)
        db.executemany(Q["update_transaction"], writes.updates)
        db.execute(
            Q["log_changes"],
            {
                "start": seq,
                "added_upto": seq + len(writes.inserts),
                "end": seq + len(writes.inserts) + len(writes.updates),
            },
        )
        db.executemany(Q["insert_tombstone"], writes.tombstones)
        db.executemany(Q["delete_transaction"], writes.deletes)
        seq = writes.last_seq
        added += len(writes.plan.added)
        modified += len(writes.plan.modified)
        removed += len(writes.plan.removed)
    db.execute(Q["set_counter"], {"name": _CHANGE_SEQ, "value": seq})
    return MergeStats(
        accounts=len(result.accounts),
        transactions=result.transaction_count,
        added=added,
        modified=modified,
        removed=removed,
    )


async def credit_cards(db: aiosqlite.Connection, owner_external_id: str) -> list[CardView]:
    """The owner's credit cards with their latest details and merged transactions."""
    cards = []
    for row in await fetch(db, "owner_cards", {"external_id": owner_external_id}):
        details: dict[str, object] = {
            "cardId": row["card_id"],
            "name": row["name"],
            "number": row["number"],
            "iban": row["iban"],
            "currencyName": row["currency_name"],
            "currencyBalance": dec_out(row["balance"]),
            "currencyFundsAvailable": dec_out(row["funds_available"]),
            "limit": dec_out(row["card_limit"]),
            "interest": dec_out(row["interest"]),
            "dueDate": row["due_date"],
            "owner": row["card_owner"],
            "owners": json_out(row["owners"]),
            "partialDueToTimeout": bool(row["partial_due_to_timeout"]),
            "updatedAt": dt_out(row["updated_at"]),
        }
        found = await fetch(db, "card_view", {"external_id": owner_external_id, "key": row["key"]})
        transactions = tuple(_stored_transaction(tx) for tx in found)
        cards.append(CardView(key=row["key"], details=details, transactions=transactions))
    return cards


async def account_owners(db: aiosqlite.Connection, owner_external_id: str) -> dict[str, list[Any]]:
    """Every owner block of each account of the owner, by IBAN."""
    rows = await fetch(db, "owner_account_owners", {"external_id": owner_external_id})
    return {row["key"]: json_out(row["owners"]) for row in rows}
