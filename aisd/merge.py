"""The merge of an import's transactions into the stored ones of the same account.

Kontomatik transactions carry no id and successive imports overlap, so identity is inferred.
Two transactions are *the same* when they share a match key (booking-independent facts: the
day, the amount and the normalised title) and the same occurrence ordinal within that key: the
n-th incoming of a key is the n-th stored of that key, both in their stable order (reply order
for incoming, local id order for stored). Identical rows are paired first, so a repeat of the
same import changes nothing even if the bank reordered rows within a day.

Inside the dates an import covers (``transaction_on >= coverage_start``) the newest import is the
truth: matched rows are kept (updated when anything changed), unmatched stored rows vanished.
Older stored rows stay untouched, but an incoming row dated before ``coverage_start`` (some banks
filter by booking date) still matches them instead of duplicating.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from aisd.kontomatik._models import Account, ImportResult, MoneyTransaction, Owner

__all__ = [
    "MatchKey",
    "MergePlan",
    "apply_plan",
    "match_key",
    "normalise_title",
    "plan_merge",
    "rebuild",
]

MatchKey = tuple[date, Decimal, str]


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What a merge changes in one account's stored transactions.

    Attributes:
        added: incoming transactions with no stored match, in reply order.
        modified: ``(stored_id, incoming)`` pairs whose stored row must take the incoming values.
        removed: stored ids inside the covered dates that the import no longer shows.
        unchanged: incoming transactions identical to their stored match.
    """

    added: list[MoneyTransaction] = field(default_factory=list)
    modified: list[tuple[int, MoneyTransaction]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changes(self) -> int:
        """Rows the plan writes."""
        return len(self.added) + len(self.modified) + len(self.removed)


def normalise_title(title: str) -> str:
    """Fold a title to what survives banks' reformatting: case, Unicode form and spacing.

    Args:
        title: the bank's title, verbatim.

    Returns:
        The NFKC, case-folded title with runs of whitespace collapsed to one space.
    """
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def match_key(tx: MoneyTransaction) -> MatchKey:
    """The facts that stay put while a transaction goes from pending to booked.

    The party's IBAN is left out on purpose: pending rows often lack counterparty details that
    appear once booked, and identical-key rows are told apart by their ordinal anyway.
    """
    return (tx.transaction_on, tx.amount, normalise_title(tx.title))


def plan_merge(
    stored: Sequence[tuple[int, MoneyTransaction]],
    incoming: Sequence[MoneyTransaction],
    coverage_start: date,
) -> MergePlan:
    """Plan the merge of one account's incoming transactions into its stored ones.

    Args:
        stored: ``(local_id, transaction)`` of the account, in ascending local id order.
        incoming: the import's transactions of that account, in reply order.
        coverage_start: the first day the import covers (its ``since``).

    Returns:
        The plan; every stored id ends up in exactly one of: matched (unchanged or modified),
        removed, or untouched (unmatched and dated before ``coverage_start``).
    """
    by_content: dict[MoneyTransaction, deque[int]] = defaultdict(deque)
    for stored_id, tx in stored:
        by_content[tx].append(stored_id)

    # Pass 1: identical rows pair up, in order, so repeats and same-day reorders are no-ops.
    matched: set[int] = set()
    unchanged = 0
    leftover: list[MoneyTransaction] = []
    for tx in incoming:
        same = by_content.get(tx)
        if same:
            matched.add(same.popleft())
            unchanged += 1
        else:
            leftover.append(tx)

    # Pass 2: the n-th remaining incoming of a key takes the n-th remaining stored of that key.
    by_key: dict[MatchKey, deque[int]] = defaultdict(deque)
    for stored_id, tx in stored:
        if stored_id not in matched:
            by_key[match_key(tx)].append(stored_id)
    added: list[MoneyTransaction] = []
    modified: list[tuple[int, MoneyTransaction]] = []
    for tx in leftover:
        candidates = by_key.get(match_key(tx))
        if candidates:
            stored_id = candidates.popleft()
            matched.add(stored_id)
            modified.append((stored_id, tx))
        else:
            added.append(tx)

    removed = [
        stored_id
        for stored_id, tx in stored
        if stored_id not in matched and tx.transaction_on >= coverage_start
    ]
    return MergePlan(added=added, modified=modified, removed=removed, unchanged=unchanged)


def apply_plan(
    stored: Sequence[tuple[int, MoneyTransaction]], plan: MergePlan, new_ids: Iterator[int]
) -> list[tuple[int, MoneyTransaction]]:
    """The rows a plan leaves: removed ones dropped, modified ones replaced in place, added ones
    appended under fresh ids from ``new_ids``."""
    removed = set(plan.removed)
    modified = dict(plan.modified)
    kept = [(i, modified.get(i, tx)) for i, tx in stored if i not in removed]
    return kept + [(next(new_ids), tx) for tx in plan.added]


def rebuild(replies: Iterable[tuple[ImportResult, date]]) -> ImportResult:
    """The merged view a sequence of imports produces from nothing, oldest first.

    Each reply is merged exactly as the pipeline merged it (``coverage_start`` is its since).
    The result holds every account's latest details and its merged transactions, so that one
    final merge over all dates against the stored rows changes only what really differs: rows
    keep their ids, and the change feed reports a repair, not a rewrite.
    """
    accounts: dict[str, Account] = {}
    rows: dict[str, list[tuple[int, MoneyTransaction]]] = {}
    owners: tuple[Owner, ...] = ()
    new_ids = itertools.count()
    for result, coverage_start in replies:
        owners = result.owners or owners
        for account in result.accounts:
            current = rows.get(account.iban, [])
            plan = plan_merge(current, account.transactions, coverage_start)
            rows[account.iban] = apply_plan(current, plan, new_ids)
            accounts[account.iban] = account
    return ImportResult(
        owners=owners,
        accounts=tuple(
            replace(account, transactions=tuple(tx for _, tx in rows[iban]))
            for iban, account in accounts.items()
        ),
    )
