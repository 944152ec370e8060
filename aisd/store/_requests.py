"""What callers hand the store: typed writes the domain computed and typed queries.

A write carries everything that is decided (the phase step, the events to append, what a
failure does to its token); the backend records it, fenced where the write says so. A query
names what is read; one query type serves every filter of the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from aisd.kontomatik._models import CommandFailure, ImportResult, ModelScore
from aisd.phases import Budget
from aisd.store._records import (
    EventRecord,
    ImportKind,
    ImportState,
    MergeStats,
    NewEvent,
    StoredTransaction,
    TokenRecord,
    TokenState,
)

__all__ = [
    "AccountView",
    "CardView",
    "EventPage",
    "Fail",
    "ImportQuery",
    "Lease",
    "LeaseEnd",
    "LeaseRenew",
    "LeaseStart",
    "LeaseWrite",
    "LifecycleDue",
    "LifecycleWrite",
    "OwnerView",
    "PurgeOutcome",
    "ReplayBatch",
    "StoreStatus",
    "Succeed",
    "TokenEnd",
    "TokenWarned",
    "WarningRescheduled",
    "WebhookAdvance",
    "WebhookFailed",
    "WebhookRegister",
    "WebhookRewind",
    "WebhookWrite",
]


# -- leases --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseStart:
    """A new claimer's lease for ``ttl_seconds`` (None: until it ends or a sole claimer ends
    it), ``max_running`` slot rows and the budget's ceiling. With ``sole`` (one host holding
    the instance lock) every other lease ends at once, so what a killed predecessor held is
    adopted by the next claim."""

    ttl_seconds: float | None
    sole: bool
    max_running: int


@dataclass(frozen=True, slots=True)
class LeaseRenew:
    """Extend ``claimer``'s lease by ``ttl_seconds`` from now (an ended one is not renewed)."""

    claimer: str
    ttl_seconds: float


@dataclass(frozen=True, slots=True)
class LeaseEnd:
    """End ``claimer``'s lease: queued imports it claimed free their slots; in-flight ones
    keep them and are adopted by the next claimer."""

    claimer: str


LeaseWrite = LeaseStart | LeaseRenew | LeaseEnd


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease just started, with the shared running-commands budget and the slots held as
    the write that started it found them."""

    claimer: str
    budget: Budget
    held: int


# -- an import's terminal steps ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Succeed:
    """A claimed import's result, stored in one transaction: owners' and accounts' latest
    details, the merge (``coverage_start`` is where this import's truth begins), the kept
    raw reply (gzip-compressed), the import's end (``successful``, its slot freed), the
    token's last import and accounts, and ``event`` built from the merge's counts and the
    import's recorded start (its first Reuse or Default Import; its creation when none)."""

    result: ImportResult
    raw_reply: bytes | None
    coverage_start: date
    polls: int
    event: Callable[[MergeStats, datetime], NewEvent]


@dataclass(frozen=True, slots=True)
class Fail:
    """A claimed import ends as ``failed`` with ``failure`` verbatim (its slot freed) and
    ``event`` (``import.failed``). An import of a token adds to the token's failure streak
    and has it re-planned, unless ``deferred_until`` (an upstream quota refusal) sets when it
    may go next instead.

    Attributes:
        reauth_required: upstream declared the token dead: it leaves ``active``.
        deferred_until: upstream refused the Reuse on the account's limit until then.
        pause_refreshes: the token plans no refresh until someone acts (a refused reply).
        token_event: appended when the write changed the token: ``token.reauth_required``
            once, as it leaves ``active``; ``quota.deferred``; ``token.refresh_paused`` while
            it is active.
        refused_reply: the reply kept for inspection (gzip-compressed), never merged.
        owner_echo: the ``ownerExternalId`` the final reply echoed, recorded with the end.
    """

    failure: CommandFailure
    polls: int
    event: NewEvent
    reauth_required: bool = False
    deferred_until: datetime | None = None
    pause_refreshes: bool = False
    token_event: NewEvent | None = None
    refused_reply: bytes | None = field(default=None, repr=False)
    owner_echo: str | None = None


# -- a token's life ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenEnd:
    """An active token moves to the final ``state`` for ``reason`` (its secret dropped) and
    ``event`` is appended; its queued refreshes fail with ``refresh_failure``. Nothing
    happens to a token that is no longer active."""

    token_id: str
    state: TokenState
    reason: str
    event: NewEvent
    refresh_failure: CommandFailure


@dataclass(frozen=True, slots=True)
class TokenWarned:
    """Threshold ``day`` of an active token is raised with ``event`` (``token.expiring``),
    once: a repeat, or a token no longer active, changes nothing."""

    token_id: str
    day: int
    event: NewEvent


@dataclass(frozen=True, slots=True)
class WarningRescheduled:
    """The token's next ``token.expiring`` threshold passes at ``at`` (None: none left)."""

    token_id: str
    at: datetime | None


LifecycleWrite = TokenEnd | TokenWarned | WarningRescheduled


@dataclass(frozen=True, slots=True)
class LifecycleDue:
    """Active tokens whose end passed (``expired``) and those whose next ``token.expiring``
    threshold passed (``warnable``, a range of an index), oldest first."""

    expired: tuple[TokenRecord, ...]
    warnable: tuple[TokenRecord, ...]


# -- reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportQuery:
    """Imports newest first: one by ``import_id``, or those matching every filter given."""

    import_id: str | None = None
    owner_external_id: str | None = None
    token_id: str | None = None
    state: ImportState | None = None
    kind: ImportKind | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AccountView:
    """A bank account with its latest details (iban, name, currencyName, currencyBalance,
    currencyFundsAvailable, updatedAt), every owner block Kontomatik sent for it, and its
    merged transactions, newest first."""

    details: dict[str, object]
    owners: tuple[Any, ...]
    transactions: tuple[StoredTransaction, ...]

    @property
    def iban(self) -> str:
        """The account's IBAN."""
        return str(self.details["iban"])


@dataclass(frozen=True, slots=True)
class CardView:
    """A credit card with its latest details (cardId, name, number, iban, currencyName,
    currencyBalance, currencyFundsAvailable, limit, interest, dueDate, owner, owners,
    partialDueToTimeout, updatedAt), ``key`` (what identifies it) and its merged
    transactions, newest first."""

    key: str
    details: dict[str, object]
    transactions: tuple[StoredTransaction, ...]


@dataclass(frozen=True, slots=True)
class OwnerView:
    """Everything kept about an owner that has a consent: the owners list of the newest
    successful import, the accounts, the credit cards and the analytical scores by model."""

    owners: tuple[dict[str, str | None], ...]
    accounts: tuple[AccountView, ...]
    cards: tuple[CardView, ...]
    scores: tuple[ModelScore, ...]


@dataclass(frozen=True, slots=True)
class EventPage:
    """Events after a position, ascending, and the feed's newest id when they were read."""

    events: tuple[EventRecord, ...]
    head: int


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What ``daemon.status`` and /metrics read, each count served by an index.

    Attributes:
        tokens: tokens by state, every state present.
        imports: imports by state, every state present.
        last_success_at: the newest successful import's end (within 30 days).
        failed_last_hour: imports that failed in the last hour.
        open_imports: ``{(kind, state): n}`` of queued and running imports.
        tokens_expiring: active tokens whose access ends within the window asked for (None:
            not asked for).
        tokens_stale: active tokens without a successful import within the age asked for
            (None: not asked for; a scan of the active tokens' last imports).
        event_head: the newest event's id (0 for an empty feed).
    """

    tokens: dict[str, int]
    imports: dict[str, int]
    last_success_at: datetime | None
    failed_last_hour: int
    open_imports: dict[tuple[str, str], int]
    tokens_expiring: int | None
    tokens_stale: int | None
    event_head: int


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    """One owner's kept raw replies, ``(import_id, coverage_start, gzip-compressed reply)``
    in the order their imports finished."""

    owner_external_id: str
    replies: tuple[tuple[str, date, bytes], ...]


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    """How many rows retention deleted."""

    transactions: int
    raw_replies: int


# -- webhooks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookRegister:
    """Give each endpoint not seen before a cursor at the feed's current end (a new endpoint
    is not flooded with the history; a known one keeps its cursor)."""

    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WebhookAdvance:
    """Move an endpoint's cursor from ``expected`` to ``cursor`` and clear its retry state;
    ``delivered`` (a 2xx answer) says the write's ``now`` becomes its last success (False:
    events were only passed over)."""

    url: str
    expected: int
    cursor: int
    delivered: bool


@dataclass(frozen=True, slots=True)
class WebhookFailed:
    """A failed attempt at the event after cursor ``expected``."""

    url: str
    expected: int
    attempts: int
    next_attempt_at: datetime
    error: str


@dataclass(frozen=True, slots=True)
class WebhookRewind:
    """Move the endpoints' cursors back to ``cursor`` (never forward) and clear their retry
    state: the events after it are delivered again."""

    urls: tuple[str, ...]
    cursor: int


WebhookWrite = WebhookRegister | WebhookAdvance | WebhookFailed | WebhookRewind
