"""Values of the data-out side of the store: the change feed, erasure and retention."""

from __future__ import annotations

from dataclasses import dataclass

from aisd.store._records import StoredTransaction


@dataclass(frozen=True, slots=True)
class CardRef:
    """The credit card a feed transaction belongs to."""

    card_id: str | None
    number: str | None  # masked
    iban: str | None


@dataclass(frozen=True, slots=True)
class FeedTransaction:
    """A transaction of the change feed: the merged row, whose it is, and the card it belongs
    to (None for a bank account's transaction)."""

    owner_external_id: str
    transaction: StoredTransaction
    card: CardRef | None = None


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One page of the change feed after a sequence value.

    Attributes:
        added: rows first written after the page's start, with their latest values.
        modified: rows written before the page's start and changed inside it.
        removed: ids of rows removed inside the page (possibly ones never delivered: a row
            added in an earlier page and removed before it was read).
        last_seq: where the next page starts (the page's start when it is empty).
        has_more: whether changes beyond ``last_seq`` existed when the page was read.
        head: the newest change sequence value at the time of reading.
    """

    added: tuple[FeedTransaction, ...]
    modified: tuple[FeedTransaction, ...]
    removed: tuple[int, ...]
    last_seq: int
    has_more: bool
    head: int


@dataclass(frozen=True, slots=True)
class ForgetOutcome:
    """What erasing an owner did."""

    rows_deleted: int
    token_ids: tuple[str, ...]
    event_id: int  # the ``owner.forgotten`` audit event
    compacted: bool  # False when a reader kept the WAL from being truncated (retry later)
