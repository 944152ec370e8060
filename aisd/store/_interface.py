"""The storage interface: every byte of durable state goes through it.

The pipeline, planner and socket talk to a :class:`Store`; the SQLite backend implements it with
SQL kept in ``.sql`` files (a PostgreSQL backend will follow behind the same interface). Every
method that changes state does so in one transaction, together with the events it reports, so a
crash between two calls never leaves half a change behind. Callers pass ``now`` explicitly: the
store never reads the clock, which keeps virtual-clock simulations and tests exact.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from aisd.billing import BilledImport, TokenLife
from aisd.kontomatik._models import CommandFailure, ImportResult, ModelScore
from aisd.phases import Budget
from aisd.store._data_records import FeedPage, ForgetOutcome
from aisd.store._ops_records import OpsCounts, WebhookBacklog, WebhookCursor
from aisd.store._records import (
    AccessKind,
    Claim,
    ConsentIn,
    EventRecord,
    ImportJob,
    ImportKind,
    ImportRecord,
    ImportState,
    LedgerEntry,
    MergeStats,
    QuotaAnswer,
    QuotaRule,
    StepWrite,
    StoredTransaction,
    SubmitOutcome,
    TickOutcome,
    TickPlanner,
    TokenOutcome,
    TokenRecord,
    TokenState,
)


class IntakeStore(Protocol):
    """Lifecycle and intake."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection(s); pending writes are committed or rolled back first."""

    async def ping(self) -> None:
        """Prove the database answers (a trivial read); raises if it does not."""

    # -- intake --------------------------------------------------------------------------------

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
    """What the import pipeline needs: leases, claims, the budget, fenced steps."""

    # -- claims and the import pipeline's fenced steps ----------------------------------------

    async def register_claimer(
        self, *, now: datetime, ttl_seconds: float | None, sole: bool, max_running: int
    ) -> str:
        """Start a lease (``now + ttl_seconds``; None: until released or ended by a sole
        claimer) for a new claimer and return its id; ensure ``max_running`` slot rows and make
        it the budget's ceiling. With ``sole`` (one host holding the instance lock) every other
        lease ends at once, so what a killed predecessor held is adopted by the next
        :meth:`claim_work`."""
        ...

    async def renew_claimer(self, claimer: str, *, now: datetime, ttl_seconds: float) -> bool:
        """Extend the lease; False when it was ended or forgotten (never renewed then)."""
        ...

    async def release_claimer(self, claimer: str, *, now: datetime) -> None:
        """End the lease: queued imports it claimed free their slots; in-flight ones keep them
        and are adopted by the next claimer."""
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

    async def budget(self) -> tuple[Budget, int]:
        """The shared running-commands budget and the slots held now."""
        ...

    async def begin_access(
        self,
        claim: Claim,
        kind: AccessKind,
        *,
        now: datetime,
        token_id: str | None,
        session_id: str | None = None,
        quota: QuotaRule | None = None,
    ) -> int | QuotaAnswer:
        """Write the ledger row of a Reuse or Default Import of a claimed import *before* it is
        sent, and move the import by the step table (``reusing``; ``starting``, with
        ``import.started`` the first time), fenced on the claim. With ``quota`` this is the quota
        section: in the same transaction, holding what the token reaches, the ledger is read and
        ``quota`` decides; a refusal is returned and nothing is written. Returns the ledger id.

        Raises:
            LeaseLost: the claim is lost or the import moved meanwhile; nothing was written.
        """
        ...

    async def record_access(self, kind: AccessKind, *, now: datetime, token_id: str | None) -> int:
        """A ledger row for an access outside imports (Revoke), committed before it is sent."""
        ...

    async def record_access_outcome(
        self,
        access_id: int,
        *,
        outcome: str,
        error_name: str | None = None,
        pressure: str | None = None,
    ) -> Budget:
        """Set a ledger row's outcome (``ok``, ``error``, ``not_sent``; a ``not_sent`` access
        provably never left the process and counts against no quota), and move the shared
        budget by :mod:`aisd.phases`' rule: ``lower`` after JobsQuotaExceeded, ``raise`` after an
        accepted Default Import. Returns the budget afterwards."""
        ...

    async def advance(self, claim: Claim, write: StepWrite, *, now: datetime) -> list[ImportJob]:
        """Record one step of a claimed import (session, command, poll, wait, requeue, its
        command's end upstream, letting it go), fenced on the claim and on the phases the step
        table allows. A requeue lets the claim and the slot go; letting go keeps an in-flight
        import's slot for whoever claims it next. The end upstream frees the slot while the
        result is stored and, in the same transaction, claims the next work for the same
        claimer (as :meth:`claim_work`): those jobs are returned (none for other steps).

        Raises:
            LeaseLost: the write changed no row.
        """
        ...

    async def finish_success(
        self,
        claim: Claim,
        result: ImportResult,
        *,
        now: datetime,
        raw_reply: bytes | None,
        coverage_start: date,
        polls: int,
    ) -> MergeStats:
        """In one transaction, fenced on the claim: owners' and accounts' latest details, the
        merge of the result's transactions into the merged view (``coverage_start`` is where
        this import's truth begins), the compressed raw reply, the import's end
        (``successful``, its slot freed), the token's last import time and its accounts, and the
        event ``import.succeeded``."""
        ...

    async def finish_failure(
        self,
        claim: Claim,
        failure: CommandFailure,
        *,
        now: datetime,
        polls: int | None = None,
        token: TokenOutcome | None = None,
    ) -> None:
        """End a claimed import as ``failed`` with the exception kept verbatim (event
        ``import.failed``, slot freed). An import of a token adds to its failure streak and has
        it re-planned; ``token`` says what else the failure does to it: ``reauth_required``
        (and ``token.reauth_required`` once), or ``deferred_until`` after an upstream quota
        refusal (and ``quota.deferred``)."""
        ...

    async def refuse_foreign_owner(
        self,
        claim: Claim,
        owner_echo: str | None,
        *,
        raw_reply: bytes | None,
        now: datetime,
        polls: int,
    ) -> bool:
        """Check a successful result's echoed owner before it is merged. When it names another
        owner than the consent's (:func:`aisd.merge.owner_mismatch`), in one transaction: the
        import fails as ``OwnerMismatch`` (``import.failed``), the raw reply is kept as refused,
        and the token's refreshes pause (``token.refresh_paused``); returns True. Otherwise
        nothing is written; returns False."""
        ...

    async def refuse_reuse_reply(
        self, claim: Claim, failure: CommandFailure, *, raw_reply: bytes, now: datetime
    ) -> None:
        """A Reuse Multiple Access answered with a reply of unknown shape: the import fails
        with ``failure``, the reply is kept as refused, and the token's refreshes pause
        (``token.refresh_paused``) instead of spending more accesses on the same answer."""
        ...


class ReadStore(Protocol):
    """Reads for the socket, raw replies and replay."""

    # -- reads for the socket ------------------------------------------------------------------

    async def get_import(self, import_id: str) -> ImportRecord | None:
        """One import, or None."""
        ...

    async def list_imports(
        self,
        *,
        owner_external_id: str | None = None,
        token_id: str | None = None,
        state: ImportState | None = None,
        kind: ImportKind | None = None,
        limit: int = 100,
    ) -> list[ImportRecord]:
        """Imports newest first, filtered."""
        ...

    async def owner_exists(self, owner_external_id: str) -> bool:
        """Whether any consent of this owner is stored."""
        ...

    async def owner_details(self, owner_external_id: str) -> list[dict[str, str | None]]:
        """The owners list of the newest successful import: name, kind, address and every
        other field Kontomatik sent for each owner."""
        ...

    async def accounts(self, owner_external_id: str) -> list[dict[str, object]]:
        """The owner's accounts with their latest details (iban, name, currencyName,
        currencyBalance, currencyFundsAvailable, updatedAt)."""
        ...

    async def transactions(self, owner_external_id: str, iban: str) -> list[StoredTransaction]:
        """The merged transactions of one account, newest first."""
        ...

    async def last_event_id(self) -> int:
        """The newest event's id (0 for an empty feed)."""
        ...

    async def list_events(self, *, after: int, limit: int) -> list[EventRecord]:
        """Events with ``id > after``, ascending."""
        ...

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{"tokens": {state: n}, "imports": {state: n}}`` for ``daemon.status``."""
        ...

    async def recent_activity(self, *, now: datetime) -> tuple[datetime | None, int]:
        """For ``daemon.status``: the newest successful import's end (within 30 days) and the
        number of imports that failed in the last hour."""
        ...

    async def replay_owners(self) -> list[str]:
        """Owners with at least one kept raw reply."""
        ...

    async def raw_replies(self, owner_external_id: str) -> list[tuple[str, date, bytes]]:
        """``(import_id, coverage_start, compressed_reply)`` of the owner's kept replies, in the
        order their imports finished."""
        ...

    async def replay_result(
        self, import_id: str, result: ImportResult, *, coverage_start: date
    ) -> MergeStats:
        """Merge ``result`` into the merged view as ``finish_success`` does, without touching the
        import row, the token or the event feed (``aisd replay`` passes a rebuilt view with
        ``coverage_start=date.min``)."""
        ...

    async def purge_raw_replies(self, *, older_than: datetime) -> int:
        """Delete raw replies of imports finished before ``older_than``; returns how many."""
        ...


class PlannerStore(Protocol):
    """Tokens and the planner: the tick's and the on-demand refresh's quota sections."""

    # -- tokens and the planner ----------------------------------------------------------------

    async def list_tokens(
        self,
        *,
        owner_external_id: str | None = None,
        state: TokenState | None = None,
        token_ids: Sequence[str] | None = None,
    ) -> list[TokenRecord]:
        """Tokens, oldest first, filtered."""
        ...

    async def next_refresh_due(self) -> datetime | None:
        """The earliest ``next_refresh_at`` of an active token (to schedule a wake-up)."""
        ...

    async def reuse_ledger(
        self, token_ids: Sequence[str], *, since: datetime
    ) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
        """Reuse accesses sent at or after ``since`` (``not_sent`` excluded) by the given tokens
        and by every token sharing an account with them, and those tokens' accounts (for
        explanations; decisions read it inside the quota section)."""
        ...

    async def plan_tick(self, *, now: datetime, limit: int, planner: TickPlanner) -> TickOutcome:
        """The tick's quota section, one transaction: the due tokens (as :meth:`due_tokens`)
        and their ledger are read, ``planner`` decides, and every plan, queued refresh and
        event it returns is written."""
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

    async def expire_tokens(self, *, now: datetime) -> list[str]:
        """Active tokens whose ``expires_at`` has passed become ``expired`` (event
        ``token.expired`` each; their queued refreshes fail); returns their ids."""
        ...

    async def warnings_due(self, *, now: datetime, days: Sequence[int]) -> list[TokenRecord]:
        """Active tokens with a ``token.expiring`` threshold (``expires_at - d days <= now``)
        not raised yet."""
        ...

    async def record_warning(self, token_id: str, day: int, *, now: datetime) -> None:
        """Raise ``token.expiring`` for threshold ``day`` (once: a repeat does nothing)."""
        ...

    async def end_token(
        self, token_id: str, state: TokenState, *, now: datetime, reason: str
    ) -> bool:
        """Move an active token to a final state (``revoked`` here; ``reauth_required`` and
        ``expired`` have their own paths): queued refreshes fail, event ``token.<state>`` with
        the reason. Returns False when it was not active (idempotent)."""
        ...

    async def multiple_access_id(self, token_id: str) -> str | None:
        """The token's secret, for Revoke Multiple Access Consent (never logged)."""
        ...


class DataStore(Protocol):
    """Data out and privacy: change feed, billing, erasure, retention, analytics."""

    # -- data out: change feed, billing, erasure, retention ------------------------------------

    async def feed_head(self) -> int:
        """The newest value of the change sequence (0 when nothing was ever written)."""
        ...

    async def feed_changes(
        self, *, after: int, limit: int, owner_external_id: str | None = None
    ) -> FeedPage:
        """Merged-transaction changes with a sequence value above ``after``, at most ``limit``
        of them, folded per row (added then modified is added with the latest values; added
        then removed is nothing). The page's ``last_seq`` is the ``after`` of the next call:
        across pages no change is skipped or repeated. With ``owner_external_id`` only that
        owner's changes count (a sequence position then belongs to that filter); an unknown
        owner raises ``LookupError``."""
        ...

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

    async def purge_transactions(self, *, before: date) -> int:
        """Delete merged transactions dated (``transactionOn``) before ``before``; returns how
        many (retention: no tombstones, downstream copies follow their own retention)."""
        ...

    # -- analytics -------------------------------------------------------------------------------

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

    async def owner_scores(self, owner_external_id: str) -> list[ModelScore]:
        """The owner's kept scores, by model id."""
        ...

    # -- the data side: cards, owner ids, refused replies ----------------------------------------

    async def credit_cards(self, owner_external_id: str) -> list[dict[str, object]]:
        """The owner's credit cards with their latest details (cardId, name, number, iban,
        currencyName, currencyBalance, currencyFundsAvailable, limit, interest, dueDate, owner,
        owners, partialDueToTimeout, updatedAt, and ``key``: what identifies it)."""
        ...

    async def card_transactions(self, owner_external_id: str, key: str) -> list[StoredTransaction]:
        """The merged transactions of one credit card (by its ``key``), newest first."""
        ...

    async def account_owners(self, owner_external_id: str) -> dict[str, list[Any]]:
        """Every owner block of each account of the owner, by IBAN."""
        ...

    async def kontomatik_owner_id(self, import_id: str) -> str | None:
        """The ``ownerExternalId`` Kontomatik echoed for an import (None when it echoed none)."""
        ...

    async def refused_reply(self, import_id: str) -> tuple[str, bytes] | None:
        """``(reason, gzip-compressed reply)`` of an import whose reply was refused."""
        ...


class OpsStore(Protocol):
    """Operations: webhook cursors, metric counts."""

    # -- operations: webhook cursors, metric counts ----------------------------------------------

    async def webhook_register(self, urls: Sequence[str], *, now: datetime) -> None:
        """Give each endpoint not seen before a cursor at the feed's current end (a new
        endpoint is not flooded with the history; a known one keeps its cursor)."""
        ...

    async def webhook_cursors(self, urls: Sequence[str]) -> list[WebhookCursor]:
        """The delivery state of the registered endpoints among ``urls``, in that order."""
        ...

    async def webhook_advance(
        self, url: str, *, expected: int, cursor: int, now: datetime | None
    ) -> bool:
        """Move an endpoint's cursor from ``expected`` to ``cursor`` and clear its retry state;
        ``now`` (a 2xx answer) becomes its last success, None when events were only passed
        over. False, changing nothing, when the cursor is no longer at ``expected`` (a
        redelivery moved it)."""
        ...

    async def webhook_failed(
        self,
        url: str,
        *,
        expected: int,
        attempts: int,
        next_attempt_at: datetime,
        error: str,
        now: datetime,
    ) -> bool:
        """Record a failed attempt at the event after cursor ``expected``; False, changing
        nothing, when the cursor moved meanwhile."""
        ...

    async def webhook_rewind(self, urls: Sequence[str], *, cursor: int) -> None:
        """Move the endpoints' cursors back to ``cursor`` (never forward) and clear their retry
        state: the events after it are delivered again."""
        ...

    async def webhook_backlog(
        self, cursor: int, *, types: Collection[str] | None
    ) -> WebhookBacklog:
        """How many events after ``cursor`` (of ``types``, or of any type) are waiting, and
        when the oldest of them was appended."""
        ...

    async def ops_counts(
        self, *, now: datetime, expiring_within: timedelta, stale_after: timedelta
    ) -> OpsCounts:
        """For /metrics: open imports by kind and state, active tokens expiring before
        ``now + expiring_within`` and those without an import since ``now - stale_after``."""
        ...


class Store(IntakeStore, PipelineStore, ReadStore, PlannerStore, DataStore, OpsStore, Protocol):
    """Durable state of the daemon, grouped by purpose. All methods are safe to call
    concurrently from many tasks; every guarantee (claims, fencing, the slot budget, the quota,
    uniqueness, feed order) is kept by the backend's transactions, not by the caller."""
