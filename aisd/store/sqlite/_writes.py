"""The merge of one account as SQL parameter batches (pure: no I/O, runs in a worker thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aisd.kontomatik._models import MoneyTransaction
from aisd.merge import MergePlan, plan_merge
from aisd.store.sqlite._codec import tx_from_row, tx_values

__all__ = ["AccountWrites", "plan_account_writes"]


@dataclass(frozen=True, slots=True)
class AccountWrites:
    """Parameter tuples for the ``insert_transaction``, ``update_transaction``,
    ``insert_tombstone`` and ``delete_transaction`` statements, in that order of execution."""

    plan: MergePlan
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    tombstones: list[tuple[Any, ...]] = field(default_factory=list)
    deletes: list[tuple[int]] = field(default_factory=list)
    last_seq: int = 0


def plan_account_writes(
    stored_rows: Sequence[Sequence[Any]],
    incoming: Sequence[MoneyTransaction],
    *,
    coverage_start: date,
    account_id: int,
    import_id: str,
    now: str,
    seq: int,
) -> AccountWrites:
    """Merge one account and turn the plan into statement parameters.

    Args:
        stored_rows: rows of the ``stored_transactions`` query (id first), ascending id.
        incoming: the import's transactions of the account, in reply order.
        coverage_start: where this import's truth begins.
        account_id: the account's row id.
        import_id: recorded as the first/last writer of the rows it writes.
        now: the stored form of the current time (tombstones).
        seq: the change sequence's current value; each write takes the next one.

    Returns:
        The plan, its parameter batches and the last change sequence value used.
    """
    if stored_rows:
        stored = [(int(row[0]), tx_from_row(row[1:])) for row in stored_rows]
        plan = plan_merge(stored, incoming, coverage_start)
    else:
        # An account's first import adds everything: what plan_merge finds, without hashing
        # every incoming transaction against nothing.
        plan = MergePlan(added=list(incoming))
    inserts: list[tuple[Any, ...]] = []
    for tx in plan.added:
        seq += 1
        inserts.append((account_id, *tx_values(tx), import_id, import_id, seq))
    updates: list[tuple[Any, ...]] = []
    for stored_id, tx in plan.modified:
        seq += 1
        updates.append((*tx_values(tx), import_id, seq, stored_id))
    tombstones: list[tuple[Any, ...]] = []
    for stored_id in plan.removed:
        seq += 1
        tombstones.append((seq, stored_id, account_id, import_id, now))
    deletes = [(stored_id,) for stored_id in plan.removed]
    return AccountWrites(plan, inserts, updates, tombstones, deletes, seq)
