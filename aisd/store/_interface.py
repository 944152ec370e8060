"""The storage interface: every byte of durable state goes through it.

The pipeline, planner and socket talk to a :class:`Store`; the SQLite backend
(:mod:`aisd.store.sqlite`) and the PostgreSQL one (:mod:`aisd.store.postgresql`) implement it
with SQL kept in ``.sql`` files. The domain decides, the store records: every write is a typed
value the domain computed (the step, its events, what a failure does to its token) and every
read a typed query. Every method that changes state does so in one transaction, together with
the events it reports, so a crash between two calls never leaves half a change behind.
Callers pass ``now`` explicitly: the store never reads the clock, which keeps virtual-clock
simulations and tests exact.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta
from typing import Protocol, overload

from aisd.billing import BilledImport, TokenLife
from aisd.kontomatik._models import ImportResult, ModelScore
from aisd.phases import Budget
from aisd.store._data_records import FeedPage, ForgetOutcome
from aisd.store._health import StorageHealth
from aisd.store._ops_records import WebhookCursor
from aisd.store._records import (
    AccessKind,
    AccessStart,
    Claim,
    ConsentIn,
    ImportJob,
    ImportRecord,
    LedgerEntry,
    MergeStats,
    NewEvent,
    QuotaAnswer,
    QuotaRule,
    StepAfter,
    StepWrite,
    SubmitOutcome,
    TickOutcome,
    TickPlanner,
    TokenRecord,
    TokenState,
)
from aisd.store._requests import (
    EventPage,
    Fail,
    ImportQuery,
    Lease,
    LeaseEnd,
    LeaseRenew,
    LeaseStart,
    LeaseWrite,
    LifecycleDue,
    LifecycleWrite,
    OwnerView,
    PurgeOutcome,
    ReplayBatch,
    StoreStatus,
    Succeed,
    WebhookWrite,
)


class IntakeStore(Protocol):
    """Lifecycle and intake."""

    # Whether writes succeed, as the last one found out (daemon.status's "storage").
    health: StorageHealth

    async def close(self) -> None:
        """Close the connection(s); pending writes are committed or rolled back first."""

    async def ping(self) -> None:
        """Prove the database answers (a trivial read); raises if it does not."""

    async def submit_consent(
        self, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
    ) -> SubmitOutcome:
        """Store a consent and queue its first import, idempotently per ``session_id``.

        One transaction: the owner (created if new), the consent, its session, its token when
        ``multiple_access_id`` is given (state ``active``, ``expires_at``), an ``initial`` import
        in state ``queued`` with ``since``, and the event ``consent.received``. A repeat with a
        ``session_id`` already stored returns the stored ids with ``created=False`` and the stored
        consent's owner and secrets in ``stored`` (for the caller to compare), and changes
        nothing.
        """
        ...


class PipelineStore(Protocol):
    """The import pipeline's steps: leases, claims, the ledger and the budget, fenced steps."""

    @overload
    async def lease(self, write: LeaseStart, *, now: datetime) -> Lease: ...

    @overload
    async def lease(self, write: LeaseRenew, *, now: datetime) -> bool: ...

    @overload
    async def lease(self, write: LeaseEnd, *, now: datetime) -> None: ...

    async def lease(self, write: LeaseWrite, *, now: datetime) -> Lease | bool | None:
        """Start, renew or end a claimer's lease. A start returns the new lease with the
        shared budget as it found it; a renewal returns False when the lease was ended or
        forgotten meanwhile (it is never renewed then); an end returns None."""
        ...

    async def claim_work(self, claimer: str, *, now: datetime) -> list[ImportJob]:
        """One transaction: adopt every in-flight import nobody live holds (they keep their
        slots, whether or not their next step is due), then claim queued imports whose
        ``not_before`` passed (``initial`` first, then oldest) each into a free slot while the
        slots held stay below the budget's limit. Every claim bumps the import's epoch; the
        jobs carry their :class:`Claim`."""
        ...

    async def open_jobs(self) -> list[ImportJob]:
        """Every import not ended yet (queued or in flight), oldest first."""
        ...

    async def begin_access(
        self,
        claim: Claim | None,
        kind: AccessKind,
        *,
        now: datetime,
        token_id: str | None,
        session_id: str | None = None,
        quota: QuotaRule | None = None,
        event: NewEvent | None = None,
    ) -> int | QuotaAnswer:
        """Write the ledger row of an upstream access *before* it is sent; returns its id.

        For a claimed import (a Reuse or a Default Import) the import moves by the step table
        (``reusing``; ``starting``), fenced on the claim, with ``event`` (``import.started`` for
        its first Default Import). With ``quota`` this is the quota section: in the same
        transaction, holding what the token reaches, the ledger is read and ``quota`` decides;
        a refusal is returned and nothing is written. Without a claim it is an access outside
        imports (a Revoke).

        Raises:
            LeaseLost: the claim is lost or the import moved meanwhile; nothing was written.
        """
        ...

    async def end_access(
        self,
        access_id: int,
        *,
        outcome: str,
        error_name: str | None = None,
        pressure: str | None = None,
        step: StepAfter | None = None,
    ) -> Budget:
        """Set a ledger row's outcome (``ok``, ``error``, ``not_sent``; a ``not_sent`` access
        provably never left the process and counts against no quota), and move the shared
        budget by :mod:`aisd.phases`' rule: ``lower`` after JobsQuotaExceeded, ``raise`` after an
        accepted Default Import. Returns the budget afterwards.

        With ``step``, the step the answer leads to (a Reuse's session, a Default Import's
        command) is recorded in the same transaction, fenced as :meth:`advance` records it:
        one commit for both, and never one without the other.

        Raises:
            LeaseLost: ``step``'s write changed no row; nothing was written.
        """
        ...

    async def end_then_begin_access(
        self, access_id: int, *, step: StepAfter, then: AccessStart
    ) -> tuple[Budget, int]:
        """:meth:`end_access` with outcome ``ok`` and ``step``, then :meth:`begin_access` of
        ``then`` for the same claim, in one transaction: a Reuse's session and the Default
        Import it is spent on, written *before* that Default Import is sent. Returns the
        budget after the end and the new ledger row's id.

        Raises:
            LeaseLost: the claim is lost or the import moved meanwhile; nothing was written.
        """
        ...

    @overload
    async def advance(self, claim: Claim, write: Succeed, *, now: datetime) -> MergeStats: ...

    @overload
    async def advance(
        self, claim: Claim, write: StepWrite | Fail, *, now: datetime
    ) -> list[ImportJob]: ...

    async def advance(
        self, claim: Claim, write: StepWrite | Succeed | Fail, *, now: datetime
    ) -> list[ImportJob] | MergeStats:
        """Record one step of a claimed import, fenced on the claim and on the phases the step
        table allows: a :class:`StepWrite` (session, command, poll, wait, requeue, its
        command's end upstream, letting it go), its result (:class:`Succeed`, returning what
        the merge changed) or its failure (:class:`Fail`). A requeue lets the claim and the
        slot go; letting go keeps an in-flight import's slot for whoever claims it next. The
        end upstream frees the slot while the result is stored and, in the same transaction,
        claims the next work for the same claimer (as :meth:`claim_work`): those jobs are
        returned (none for other steps).

        Raises:
            LeaseLost: the write changed no row.
        """
        ...


class PlannerStore(Protocol):
    """Tokens and the planner: the quota sections, a token's life."""

    async def list_tokens(
        self,
        *,
        owner_external_id: str | None = None,
        state: TokenState | None = None,
        token_ids: Sequence[str] | None = None,
    ) -> list[TokenRecord]:
        """Tokens, oldest first, filtered."""
        ...

    async def reuse_ledger(
        self, token_ids: Sequence[str], *, since: datetime
    ) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
        """Reuse accesses sent at or after ``since`` (``not_sent`` excluded) by the given tokens
        and by every token sharing an account with them, and those tokens' accounts (for
        explanations; decisions read it inside the quota section)."""
        ...

    async def plan_tick(self, *, now: datetime, limit: int, planner: TickPlanner) -> TickOutcome:
        """The tick's quota section, one transaction: the due tokens (active, no refresh open,
        ``next_refresh_at`` passed, earliest first, at most ``limit``) and their ledger are
        read, ``planner`` decides, and every plan, queued refresh and event it returns is
        written; the outcome carries the earliest plan left after those writes."""
        ...

    async def queue_refresh(
        self, token_id: str, *, now: datetime, since: date, quota: QuotaRule | None = None
    ) -> str | QuotaAnswer | None:
        """Queue a ``refresh`` import for an active token and clear its ``next_refresh_at``;
        with ``quota``, inside the quota section (a refusal is returned). Returns the import
        id, or None when a refresh is already open (a unique index keeps one open refresh per
        token).

        Raises:
            NotFoundError: the token is unknown.
            ConflictError: the token is not ``active``.
        """
        ...

    async def lifecycle_due(self, *, now: datetime) -> LifecycleDue:
        """Active tokens past their end, and those whose next expiry warning has passed."""
        ...

    async def record_lifecycle(
        self, writes: Sequence[LifecycleWrite], *, now: datetime
    ) -> list[bool]:
        """Record a token's end, a raised expiry warning or the warning schedule, all in one
        transaction; per write, whether it changed anything (an end or a warning of a token no
        longer active changes nothing). A token's end leaves imports past the queue to finish.

        Raises:
            NotFoundError: a token is unknown.
        """
        ...

    async def multiple_access_id(self, token_id: str) -> str | None:
        """The token's secret, for Revoke Multiple Access Consent (never logged)."""
        ...


class ReadStore(Protocol):
    """Reads for the socket, status and metrics, and replay."""

    async def imports(self, query: ImportQuery) -> list[ImportRecord]:
        """Imports newest first as ``query`` filters them (one import by its id: with the
        echo of its token's earlier imports)."""
        ...

    async def owner(self, owner_external_id: str) -> OwnerView | None:
        """What is kept about an owner, or None when no consent of theirs is stored."""
        ...

    async def events(self, *, after: int, limit: int) -> EventPage:
        """Events with ``id > after``, ascending, at most ``limit``, and the feed's head."""
        ...

    async def feed_changes(
        self, *, after: int, limit: int, owner_external_id: str | None = None
    ) -> FeedPage:
        """Merged-transaction changes with a sequence value above ``after``, at most ``limit``
        of them, folded per row (added then modified is added with the latest values; added
        then removed is nothing). The page's ``last_seq`` is the ``after`` of the next call:
        across pages no change is skipped or repeated; its ``head`` is the newest sequence
        value. With ``owner_external_id`` only that owner's changes count (a sequence position
        then belongs to that filter); an unknown owner raises ``LookupError``."""
        ...

    async def status(
        self,
        *,
        now: datetime,
        expiring_within: timedelta | None = None,
        stale_after: timedelta | None = None,
    ) -> StoreStatus:
        """The counts of ``daemon.status`` and /metrics: tokens and imports by state, recent
        activity, open imports by kind and state, and, when asked for (/metrics), active
        tokens expiring before ``now + expiring_within`` and those without an import since
        ``now - stale_after``."""
        ...

    async def raw_replies(self, *, after_owner: str | None) -> ReplayBatch | None:
        """The kept raw replies of the first owner (by id) after ``after_owner`` that has any
        (None: from the first), or None when no owner is left."""
        ...

    async def replay_result(
        self, import_id: str, result: ImportResult, *, coverage_start: date
    ) -> MergeStats:
        """Merge ``result`` into the merged view as a success does, without touching the
        import row, the token or the event feed (``aisd replay`` passes a rebuilt view with
        ``coverage_start=date.min``)."""
        ...


class PrivacyStore(Protocol):
    """Data out and operations: billing, erasure, retention, analytics, webhook cursors."""

    async def billing_inputs(
        self, *, start: datetime | None = None, end: datetime | None = None
    ) -> tuple[list[TokenLife], list[BilledImport]]:
        """Every token whose life may have a billing cycle ending in ``[start, end)`` (open
        when None), with ``ended_at`` when it left ``active``, and the tokens' successful
        imports, including the anonymous ones kept after their owner was forgotten."""
        ...

    async def forget_owner(self, owner_external_id: str, *, now: datetime) -> ForgetOutcome:
        """Erase everything about an owner in one transaction: owner, consents, sessions,
        imports (successful ones copied anonymously for billing), accounts, transactions (a
        tombstone each, without account, for feed consumers), raw replies, the ledger's session
        links, token-account links and token secrets; events keep ids and types but lose the
        owner and personal data; then the event ``owner.forgotten`` (no personal data) and a
        compaction so the bytes leave the file. Tokens must have been revoked upstream first.
        Raises ``LookupError`` when the owner is unknown and ``ConflictError`` (changing
        nothing) while a token of the owner is active or an import is queued or running."""
        ...

    async def purge(
        self, *, transactions_before: date | None, raw_before: datetime | None
    ) -> PurgeOutcome:
        """Retention: delete merged transactions dated (``transactionOn``) before
        ``transactions_before`` (no tombstones: downstream copies follow their own retention)
        and raw replies of imports finished before ``raw_before``; None keeps them."""
        ...

    async def save_owner_scores(
        self,
        owner_external_id: str,
        scores: Sequence[ModelScore],
        *,
        import_id: str | None,
        now: datetime,
    ) -> None:
        """Keep the owner's latest score per model (``AISD_ANALYTICS=scores``)."""
        ...

    async def webhook_cursors(
        self,
        urls: Sequence[str],
        *,
        backlog: bool = False,
        types: Collection[str] | None = None,
    ) -> list[WebhookCursor]:
        """The delivery state of the registered endpoints among ``urls``, in that order; with
        ``backlog``, how many events after each cursor (of ``types``, or of any type) are
        waiting and when the oldest of them was appended."""
        ...

    async def webhook_write(self, write: WebhookWrite, *, now: datetime) -> bool:
        """Register endpoints, move a cursor on, record a failed attempt or rewind cursors.
        False, changing nothing, when a cursor is no longer where the write expected it (a
        redelivery moved it)."""
        ...


class Store(IntakeStore, PipelineStore, PlannerStore, ReadStore, PrivacyStore, Protocol):
    """Durable state of the daemon, grouped by purpose. All methods are safe to call
    concurrently from many tasks; every guarantee (claims, fencing, the slot budget, the quota,
    uniqueness, feed order) is kept by the backend's transactions, not by the caller."""
