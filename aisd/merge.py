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

What an import covers is decided by :func:`coverage_start`, never assumed from its ``since``: a
reply may be one day short upstream, or cut short (``partialDueToTimeout``), and neither may
delete a stored row it simply did not reach. Accounts and credit cards merge alike, each card
keyed by its ``cardId`` (else its masked number).
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from aisd.kontomatik._models import Account, CreditCard, ImportResult, MoneyTransaction, Owner

__all__ = [
    "ACCOUNT",
    "CARD",
    "Coverage",
    "MatchKey",
    "MergePlan",
    "apply_plan",
    "container_key",
    "coverage_start",
    "coverages",
    "match_key",
    "normalise_title",
    "owner_mismatch",
    "plan_merge",
    "rebuild",
]

MatchKey = tuple[date, Decimal, str]
ACCOUNT: Literal["account"] = "account"
CARD: Literal["card"] = "card"
# Where a merged row lives: ("account", iban) or ("card", cardId or masked number).
ContainerKey = tuple[str, str]
Coverage = Mapping[ContainerKey, date]
# A coverage start past every date: nothing stored may be removed.
NOTHING_COVERED = date.max
# How Kontomatik names an owner the widget was given no ownerExternalId for.
GENERATED_OWNER_PREFIX = "kontomatik-"


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


def owner_mismatch(consent_owner: str, echo: str | None, token_echo: str | None) -> bool:
    """Whether a result echoed for another owner than the consent's must be refused.

    Kontomatik echoes the ``ownerExternalId`` the widget was given, or ``kontomatik-<uuid>``
    when it was given none. A result is the consent owner's when the echo is absent (nothing
    to check), equals the consent's owner, or is a generated id that is not contradicted by
    what the same token's earlier imports echoed. Any other echo names someone else.

    Args:
        consent_owner: the ``ownerExternalId`` the integrator submitted.
        echo: what this import's replies echoed.
        token_echo: what an earlier successful import of the same token echoed, if any.
    """
    if echo is None or echo == consent_owner:
        return False
    if echo.startswith(GENERATED_OWNER_PREFIX):
        return token_echo is not None and token_echo != echo
    return True


def coverage_start(
    since: date, *, partial: bool, own_oldest: date | None, reply_oldest: date | None
) -> date:
    """The first day an account's or card's stored rows may be removed by this import.

    Coverage starts at the reply's own oldest date or at ``since`` plus one day, whichever is
    later: upstream may serve a window one day shorter than asked (booking-date filters, time
    zones), and that boundary day must not lose its rows. A partial account or card (cut short
    by a timeout) covers only what it returned, so its own oldest date counts; one that
    returned nothing (or a reply with no transactions at all) removes nothing.

    Args:
        since: the day the import asked for.
        partial: the account or card is marked ``partialDueToTimeout``.
        own_oldest: its oldest returned ``transactionOn``, None without transactions.
        reply_oldest: the oldest ``transactionOn`` of the whole reply, None without any.
    """
    oldest = own_oldest if partial else reply_oldest
    if oldest is None:
        return NOTHING_COVERED
    return max(since + timedelta(days=1), oldest)


def container_key(item: Account | CreditCard) -> ContainerKey:
    """Where an account's or a card's rows are merged."""
    if isinstance(item, Account):
        return (ACCOUNT, item.iban)
    return (CARD, item.key)


def coverages(result: ImportResult, since: date) -> dict[ContainerKey, date]:
    """:func:`coverage_start` of every account and card of a reply that asked for ``since``."""
    items = result.containers
    oldest = {
        container_key(i): min((t.transaction_on for t in i.transactions), default=None)
        for i in items
    }
    everything = [d for d in oldest.values() if d is not None]
    reply_oldest = min(everything) if everything else None
    return {
        container_key(i): coverage_start(
            since,
            partial=i.partial_due_to_timeout,
            own_oldest=oldest[container_key(i)],
            reply_oldest=reply_oldest,
        )
        for i in items
    }


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

    Each reply is merged exactly as the pipeline merged it (its coverage from
    :func:`coverages` of its since). The result holds every account's and card's latest
    details and its merged transactions, so that one final merge over all dates against the
    stored rows changes only what really differs: rows keep their ids, and the change feed
    reports a repair, not a rewrite.
    """
    latest: dict[ContainerKey, Account | CreditCard] = {}
    rows: dict[ContainerKey, list[tuple[int, MoneyTransaction]]] = {}
    owners: tuple[Owner, ...] = ()
    new_ids = itertools.count()
    for result, since in replies:
        owners = result.owners or owners
        covered = coverages(result, since)
        for item in result.containers:
            key = container_key(item)
            current = rows.get(key, [])
            plan = plan_merge(current, item.transactions, covered[key])
            rows[key] = apply_plan(current, plan, new_ids)
            latest[key] = item
    merged = {key: tuple(tx for _, tx in rows[key]) for key in latest}
    return ImportResult(
        owners=owners,
        accounts=tuple(
            replace(item, transactions=merged[key])
            for key, item in latest.items()
            if isinstance(item, Account)
        ),
        credit_cards=tuple(
            replace(item, transactions=merged[key])
            for key, item in latest.items()
            if isinstance(item, CreditCard)
        ),
    )
