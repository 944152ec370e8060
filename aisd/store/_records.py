"""Values that cross the storage interface.

Times are timezone-aware UTC ``datetime`` values on this side of the interface; how a backend
stores them is its own business. Secrets (session signatures, ``multipleAccessId`` values) are
excluded from ``repr`` so that a record can never leak one into a log or a traceback.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from aisd.kontomatik._models import Session
from aisd.phases import ImportPhase, Step


class ImportKind(enum.StrEnum):
    """Why an import runs: a consent's first (a person waits) or an unattended refresh."""

    INITIAL = "initial"
    REFRESH = "refresh"


class ImportState(enum.StrEnum):
    """The import states of the API (docs/api.md)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"


class TokenState(enum.StrEnum):
    """Token states of the API (docs/api.md). Anything but ``active`` is final."""

    ACTIVE = "active"
    REAUTH_REQUIRED = "reauth_required"
    REVOKED = "revoked"
    EXPIRED = "expired"


class AccessKind(enum.StrEnum):
    """Upstream calls recorded in the access ledger before they are sent."""

    REUSE = "reuse"
    DEFAULT_IMPORT = "default_import"
    REVOKE = "revoke"


@dataclass(frozen=True, slots=True)
class ConsentIn:
    """A consent as ``consent.submit`` receives it (already validated)."""

    owner_external_id: str
    session_id: str
    session_signature: str = field(repr=False)
    multiple_access_id: str | None = field(default=None, repr=False)
    target: str | None = None
    refresh_until: date | None = None
    max_imports: int | None = None


@dataclass(frozen=True, slots=True)
class StoredConsent:
    """What was stored under a ``session_id``, for a repeat submit to be compared with.

    ``session_signature`` and ``multiple_access_id`` are ``None`` when never given or no longer
    kept (a final token's secret is dropped).
    """

    owner_external_id: str
    session_signature: str | None = field(repr=False)
    multiple_access_id: str | None = field(repr=False)
    token_id: str | None


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What ``submit_consent`` did. ``created`` is False for a repeat, and ``stored`` then holds
    the consent first stored under that ``session_id``."""

    import_id: str
    token_id: str | None
    created: bool
    stored: StoredConsent | None = None


@dataclass(frozen=True, slots=True)
class ImportJob:
    """What the pipeline needs to drive one import to its end."""

    import_id: str
    kind: ImportKind
    phase: ImportPhase
    owner_external_id: str
    token_id: str | None
    since: date
    created_at: datetime
    session: Session | None = None
    command_id: str | None = None
    polls: int = 0
    default_import_attempts: int = 0
    attempts: int = 0  # retry-later attempts so far (drives back-off)
    not_before: datetime | None = None  # earliest time the next step may run
    started_at: datetime | None = None
    last_poll_at: datetime | None = None
    # The token's secret, present only for refresh imports that still need a session.
    multiple_access_id: str | None = field(default=None, repr=False)
    # Who drives it: every write of a step is fenced on this claim.
    claim: Claim | None = None
    # Adopted in phase starting from a claimer whose lease lapsed: the reply to its Default
    # Import may still reach it, and it may store the command id late.
    reply_may_arrive: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to drive one import: held by ``claimer`` (a lease) at ``epoch``, bumped at
    every claim. A write under an older claim changes nothing and raises ``LeaseLost``."""

    import_id: str
    claimer: str
    epoch: int


@dataclass(frozen=True, slots=True)
class StepWrite:
    """What one pipeline step records (besides the phase the step table gives).

    Attributes:
        step: the step (:class:`aisd.phases.Step`).
        session: the session a Reuse returned (``SESSION``).
        command_id: the Default Import's command (``COMMAND``).
        not_before: nothing runs for the import before this time.
        attempts: retry-later attempts so far, when it changes.
        owner_echo: the ``ownerExternalId`` the Default Import's reply echoed (``COMMAND``).
        access: the ledger id of the Default Import that returned ``command_id``
            (``COMMAND``): its sender may store the command id after its claim lapsed, as long
            as the import is still in ``starting`` with no command id and no later Default
            Import was recorded.
    """

    step: Step
    session: Session | None = None
    command_id: str | None = None
    not_before: datetime | None = None
    attempts: int | None = None
    owner_echo: str | None = None
    access: int | None = None


@dataclass(frozen=True, slots=True)
class StepAfter:
    """A fenced step of a claimed import that an access's answer leads to, recorded with the
    access's end in one transaction (see :meth:`aisd.store.Store.end_access`).

    Attributes:
        claim: the claim the step is fenced on.
        write: the step (``SESSION`` after a Reuse, ``COMMAND`` after a Default Import).
        now: when the step is recorded.
    """

    claim: Claim
    write: StepWrite
    now: datetime


@dataclass(frozen=True, slots=True)
class AccessStart:
    """The next access of a claimed import, begun in the transaction that ends the one before
    it (see :meth:`aisd.store.Store.end_then_begin_access`): a Reuse's session and the Default
    Import it is spent on, one commit instead of two back to back.

    Attributes:
        kind: the access (a Default Import).
        token_id: the token it is made for, if any.
        session_id: the session it uses.
        event: appended with it (``import.started`` for an import's first Default Import).
        now: when it is recorded.
    """

    kind: AccessKind
    token_id: str | None
    session_id: str | None
    event: NewEvent | None
    now: datetime


@dataclass(frozen=True, slots=True)
class QuotaView:
    """What the quota rule sees in the quota section, read under the section's lock: the
    token (None when unknown), the Reuse accesses counting against its accounts (its own and
    those of every token sharing one), and for each token found there the accounts it shares
    with this one (all the rule needs of them; the token's own come with its record)."""

    token: TokenRecord | None
    ledger: tuple[LedgerEntry, ...]
    accounts_of: dict[str, frozenset[str]]
    now: datetime


class QuotaRule(Protocol):
    """The pure quota rule the store applies inside its quota section."""

    def horizon(self, now: datetime) -> datetime:
        """How far back the ledger must be read to decide at ``now``."""
        ...

    def decide(self, view: QuotaView) -> QuotaAnswer:
        """Whether a Reuse (or a queued refresh) of ``view.token`` may go now."""
        ...


@dataclass(frozen=True, slots=True)
class QuotaAnswer:
    """The quota rule's word on one Reuse: send now (recorded at ``at``), later
    (``retry_at``), or never (``retry_at`` None)."""

    allowed: bool
    at: datetime
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImportError_:
    """Kontomatik's exception on a failed import (name verbatim)."""

    name: str
    message: str


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """An import as ``import.get`` shows it."""

    import_id: str
    owner_external_id: str
    token_id: str | None
    kind: ImportKind
    state: ImportState
    command_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    polls: int
    accounts: int | None
    transactions: int | None
    error: ImportError_ | None
    since: date
    # The ``ownerExternalId`` Kontomatik echoed for it (None when it echoed none), and, read
    # for one import only, the newest echo of an earlier successful import of its token.
    owner_echo: str | None = None
    token_echo: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One row of the durable event feed; ``id`` ascends without gaps. ``origin`` names the
    daemon that appended it on a database several daemons share (None on SQLite)."""

    id: int
    at: datetime
    type: str
    owner_external_id: str | None
    token_id: str | None
    import_id: str | None
    data: dict[str, Any]
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append inside the same transaction as the change it reports."""

    type: str
    owner_external_id: str | None = None
    token_id: str | None = None
    import_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    """A transaction of the merged view, with its stable local id."""

    id: int
    account_iban: str
    transaction_on: date
    booked_on: date | None
    amount: Decimal
    balance: Decimal | None
    title: str
    party: str | None
    party_iban: str | None
    kind: str | None
    status: str | None
    labels: tuple[str, ...]
    currency_name: str


@dataclass(frozen=True, slots=True)
class MergeStats:
    """What one successful import changed in the merged view."""

    accounts: int
    transactions: int  # transactions in the reply
    added: int
    modified: int
    removed: int


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as the planner and ``token.list`` see it (never its secret)."""

    token_id: str
    owner_external_id: str
    state: TokenState
    created_at: datetime
    expires_at: datetime
    accounts: frozenset[str]  # IBANs reached, from its successful imports
    last_import_at: datetime | None  # last successful import (initial or refresh)
    last_refresh_at: datetime | None  # last Reuse sent (whatever its outcome)
    next_refresh_at: datetime | None  # the planner's next time (None: no more refreshes)
    plan_reason: str | None  # why next_refresh_at is what it is (planner.Reason)
    failures: int  # consecutive failed refreshes since the last success
    upstream_deferred_until: datetime | None  # after MultipleAccessLimitExceeded
    refresh_until: date | None
    max_imports: int | None
    imports_done: int  # successful imports so far (initial included)
    warned_days: tuple[int, ...]  # token.expiring thresholds already raised
    state_reason: str | None = None  # why the state left `active`
    ended_at: datetime | None = None  # when it left `active`


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A Reuse Multiple Access that counts against the quota (``not_sent`` rows excluded)."""

    token_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PlanWrite:
    """The planner's decision on one due token: queue a refresh now (``queue_since``), or keep
    the next refresh time ``at`` with its ``reason`` (and an event such as ``quota.deferred``)."""

    token_id: str
    queue_since: date | None = None
    at: datetime | None = None
    reason: str = ""
    event: NewEvent | None = None


class TickPlanner(Protocol):
    """The pure planner the store applies inside the tick's quota section."""

    def horizon(self, now: datetime) -> datetime:
        """How far back the ledger must be read to decide at ``now``."""
        ...

    def decide(
        self,
        due: list[TokenRecord],
        ledger: list[LedgerEntry],
        accounts_of: dict[str, frozenset[str]],
        now: datetime,
    ) -> list[PlanWrite]:
        """One decision per due token. ``ledger`` holds the Reuse accesses counting against
        the due tokens' accounts; ``accounts_of`` each of their tokens' accounts among those
        (the due tokens' own come with their records)."""
        ...


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What the tick's quota section found due, which refreshes it queued, and the earliest
    ``next_refresh_at`` of an active token once its plans are written (the next wake-up; None
    when no active token has one)."""

    due: tuple[TokenRecord, ...]
    queued: tuple[str, ...]
    next_due_at: datetime | None
