"""The incremental change feed of the merged transactions (``data.changes``).

A page is a range of the ``change_seq`` sequence over the change log (``transaction_changes``:
inserts and updates) and the tombstones (removals). Within a page the changes of one row fold
into one: added then modified is added, with the latest values; added then removed is nothing.
Across pages nothing folds, so a change is delivered exactly once whatever the page size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from aisd.store._data_records import CardRef, FeedPage, FeedTransaction
from aisd.store.sqlite._codec import json_in, stored_transaction
from aisd.store.sqlite._data_core import DataCore, fetch, scalar
from aisd.store.sqlite._errors import NotFoundError

__all__ = ["FeedMethods", "Folded", "fold"]


@dataclass(frozen=True, slots=True)
class Folded:
    """A page's changes folded per row: ids in the order of their last change."""

    added: tuple[int, ...]
    modified: tuple[int, ...]
    removed: tuple[int, ...]


def fold(entries: Iterable[tuple[int, int, str]]) -> Folded:
    """Fold a page of the change log into one change per row.

    Args:
        entries: ``(seq, transaction_id, kind)`` in ascending ``seq``; ``kind`` is ``added``,
            ``modified`` or ``removed``.

    Returns:
        Rows whose last change is a removal are ``removed``, unless the page also added them
        (then they vanish); other rows are ``added`` when the page added them (or re-added an
        id removed earlier in it), else ``modified``.
    """
    first: dict[int, str] = {}
    last: dict[int, tuple[int, str]] = {}
    for seq, tx_id, kind in entries:
        first.setdefault(tx_id, kind)
        last[tx_id] = (seq, kind)
    added: list[int] = []
    modified: list[int] = []
    removed: list[int] = []
    for tx_id, (_, kind) in sorted(last.items(), key=lambda item: item[1][0]):
        if kind == "removed":
            if first[tx_id] != "added":
                removed.append(tx_id)
        elif first[tx_id] == "modified":
            modified.append(tx_id)
        else:
            added.append(tx_id)
    return Folded(tuple(added), tuple(modified), tuple(removed))


def _feed_transaction(row: sqlite3.Row) -> FeedTransaction:
    card = None
    if row["source"] == "card":
        card = CardRef(card_id=row["card_id"], number=row["number"], iban=row["own_iban"])
    return FeedTransaction(
        owner_external_id=row["owner_external_id"],
        transaction=stored_transaction(row),
        card=card,
    )


class FeedMethods:
    """``feed_changes``, mixed into :class:`~aisd.store.sqlite.SqliteStore`."""

    async def feed_changes(
        self: DataCore, *, after: int, limit: int, owner_external_id: str | None = None
    ) -> FeedPage:
        """See :meth:`aisd.store.Store.feed_changes`.

        Raises:
            NotFoundError: ``owner_external_id`` is given and unknown.
        """
        db = self._reader
        head = int(await scalar(db, "feed_head"))
        params: dict[str, object] = {"after": after, "limit": limit + 1}
        if owner_external_id is None:
            entries = await fetch(db, "feed_entries", params)
        else:
            owner_id = await scalar(db, "feed_owner_id", {"external_id": owner_external_id})
            if owner_id is None:
                raise NotFoundError("owner not found")
            entries = await fetch(db, "feed_entries_of_owner", {**params, "owner_id": owner_id})
        has_more = len(entries) > limit
        page = [(int(e["seq"]), int(e["transaction_id"]), str(e["kind"])) for e in entries[:limit]]
        folded = fold(page)
        wanted = [*folded.added, *folded.modified]
        rows = {}
        if wanted:
            found = await fetch(db, "feed_rows", {"ids": json_in(wanted)})
            rows = {int(row["id"]): _feed_transaction(row) for row in found}
        # A row gone by now was removed after this page: its tombstone comes in a later one.
        return FeedPage(
            added=tuple(rows[i] for i in folded.added if i in rows),
            modified=tuple(rows[i] for i in folded.modified if i in rows),
            removed=folded.removed,
            last_seq=page[-1][0] if page else after,
            has_more=has_more,
            head=head,
        )
