"""Test helpers over the store's public surface: the focused calls the suites assert on
(one import, one account's transactions, one token's end, a finished import), each built
from :class:`aisd.store.Store`'s typed queries and writes as the daemon builds them.

A few need what no daemon path reads (a refused reply, a plan set by hand, events appended
out of band): those run one statement of the backend's own query table in a transaction, on
either backend (both run backend-neutral step functions through ``_run``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar, cast

from aisd import events
from aisd.kontomatik._models import CommandFailure, ImportResult, ModelScore
from aisd.merge import owner_mismatch
from aisd.phases import Budget, ImportPhase
from aisd.store import (
    AccessKind,
    Claim,
    EventRecord,
    ImportJob,
    ImportKind,
    ImportQuery,
    ImportRecord,
    ImportState,
    LeaseEnd,
    LeaseRenew,
    LeaseStart,
    LedgerEntry,
    MergeStats,
    NewEvent,
    NotFoundError,
    PlanWrite,
    QuotaAnswer,
    QuotaRule,
    StoredTransaction,
    StoreStatus,
    Succeed,
    TokenEnd,
    TokenRecord,
    TokenState,
    TokenWarned,
    WarningRescheduled,
    WebhookRegister,
)
from aisd.store import Store as _Store
from aisd.store.sqlite._codec import dt_in
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._steps import budget_of
from aisd.store.sqlite._sync import emit, rows

T = TypeVar("T")


class _Runs(Protocol):
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


async def _run(store: _Store, fn: Callable[[sqlite3.Connection], T]) -> T:
    return await cast(_Runs, store)._run(fn)


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What a failed import does to its token, as the suites spell it."""

    reauth_required: bool = False
    deferred_until: datetime | None = None


# -- imports ---------------------------------------------------------------------------------


async def get_import(store: _Store, import_id: str) -> ImportRecord | None:
    """One import, or None."""
    found = await store.imports(ImportQuery(import_id=import_id))
    return found[0] if found else None


async def list_imports(
    store: _Store,
    *,
    owner_external_id: str | None = None,
    token_id: str | None = None,
    state: ImportState | None = None,
    kind: ImportKind | None = None,
    limit: int = 100,
) -> list[ImportRecord]:
    """Imports newest first, filtered."""
    query = ImportQuery(None, owner_external_id, token_id, state, kind, limit)
    return await store.imports(query)


async def kontomatik_owner_id(store: _Store, import_id: str) -> str | None:
    """The ``ownerExternalId`` Kontomatik echoed for an import."""
    found = await get_import(store, import_id)
    return None if found is None else found.owner_echo


async def refused_reply(store: _Store, import_id: str) -> tuple[str, bytes] | None:
    """``(reason, gzip-compressed reply)`` of an import whose reply was refused."""

    def read(db: sqlite3.Connection) -> tuple[str, bytes] | None:
        found = rows(db, "refused_reply", {"import_id": import_id})
        return None if not found else (found[0]["reason"], bytes(found[0]["reply"]))

    return await _run(store, read)


# -- an owner's data -------------------------------------------------------------------------


async def owner_exists(store: _Store, owner: str) -> bool:
    """Whether any consent of this owner is stored."""
    return await store.owner(owner) is not None


async def owner_details(store: _Store, owner: str) -> list[dict[str, str | None]]:
    """The owners list of the newest successful import."""
    view = await store.owner(owner)
    return [] if view is None else list(view.owners)


async def accounts(store: _Store, owner: str) -> list[dict[str, object]]:
    """The owner's accounts with their latest details."""
    view = await store.owner(owner)
    return [] if view is None else [dict(a.details) for a in view.accounts]


async def transactions(store: _Store, owner: str, iban: str) -> list[StoredTransaction]:
    """The merged transactions of one account, newest first."""
    view = await store.owner(owner)
    if view is None:
        return []
    return [t for a in view.accounts if a.iban == iban for t in a.transactions]


async def credit_cards(store: _Store, owner: str) -> list[dict[str, object]]:
    """The owner's credit cards with their latest details and ``key``."""
    view = await store.owner(owner)
    return [] if view is None else [{**c.details, "key": c.key} for c in view.cards]


async def card_transactions(store: _Store, owner: str, key: str) -> list[StoredTransaction]:
    """The merged transactions of one credit card, newest first."""
    view = await store.owner(owner)
    if view is None:
        return []
    return [t for c in view.cards if c.key == key for t in c.transactions]


async def owner_scores(store: _Store, owner: str) -> list[ModelScore]:
    """The owner's kept scores, by model id."""
    view = await store.owner(owner)
    return [] if view is None else list(view.scores)


# -- the event feed, status, the change feed --------------------------------------------------


async def last_event_id(store: _Store) -> int:
    """The newest event's id (0 for an empty feed)."""
    return (await store.events(after=0, limit=0)).head


async def list_events(store: _Store, *, after: int, limit: int) -> list[EventRecord]:
    """Events with ``id > after``, ascending."""
    return list((await store.events(after=after, limit=limit)).events)


async def append_events(store: _Store, new: Sequence[NewEvent], *, now: datetime) -> list[int]:
    """Append events out of band (what a daemon path appends with its own change)."""
    return await _run(store, lambda db: emit(db, new, now))


async def status(store: _Store, now: datetime | None = None) -> StoreStatus:
    """daemon.status's counts at ``now`` (the wall clock by default)."""
    return await store.status(now=now or datetime.now().astimezone())


async def counts(store: _Store) -> dict[str, dict[str, int]]:
    """``{"tokens": {state: n}, "imports": {state: n}}``."""
    found = await status(store)
    return {"tokens": found.tokens, "imports": found.imports}


async def recent_activity(store: _Store, *, now: datetime) -> tuple[datetime | None, int]:
    """The newest successful import's end and the imports failed in the last hour."""
    found = await status(store, now)
    return found.last_success_at, found.failed_last_hour


async def ops_counts(
    store: _Store, *, now: datetime, expiring_within: timedelta, stale_after: timedelta
) -> StoreStatus:
    """/metrics' counts."""
    return await store.status(now=now, expiring_within=expiring_within, stale_after=stale_after)


async def feed_head(store: _Store) -> int:
    """The newest value of the change sequence."""
    return (await store.feed_changes(after=0, limit=0)).head


# -- replay and retention --------------------------------------------------------------------


async def replay_owners(store: _Store) -> list[str]:
    """Owners with at least one kept raw reply."""
    out: list[str] = []
    while (batch := await store.raw_replies(after_owner=out[-1] if out else None)) is not None:
        out.append(batch.owner_external_id)
    return out


async def raw_replies(store: _Store, owner: str) -> list[tuple[str, date, bytes]]:
    """``(import_id, coverage_start, reply)`` of the owner's kept replies."""
    after: str | None = None
    while (batch := await store.raw_replies(after_owner=after)) is not None:
        if batch.owner_external_id == owner:
            return list(batch.replies)
        after = batch.owner_external_id
    return []


async def purge_raw_replies(store: _Store, *, older_than: datetime) -> int:
    """Delete raw replies of imports finished before ``older_than``."""
    return (await store.purge(transactions_before=None, raw_before=older_than)).raw_replies


# -- tokens ----------------------------------------------------------------------------------


async def _token(store: _Store, token_id: str) -> TokenRecord:
    found = await store.list_tokens(token_ids=[token_id])
    if not found:
        raise NotFoundError(f"token {token_id} not found")
    return found[0]


async def token_state(store: _Store, token_id: str) -> TokenState | None:
    """A token's state, or None when unknown."""
    found = await store.list_tokens(token_ids=[token_id])
    return found[0].state if found else None


async def end_token(
    store: _Store, token_id: str, state: TokenState, *, now: datetime, reason: str
) -> bool:
    """Move an active token to a final state, as a revocation does."""
    final = TokenState(state)
    if final == TokenState.ACTIVE:
        raise ValueError("end_token needs a final state")
    token = await _token(store, token_id)
    write = TokenEnd(
        token_id,
        final,
        reason,
        events.token_ended(token, final, reason),
        events.ended_refresh_failure(final),
    )
    (changed,) = await store.record_lifecycle([write], now=now)
    return changed


async def expire_tokens(store: _Store, *, now: datetime) -> list[str]:
    """Active tokens past their end become ``expired``, as the tick does; returns their ids."""
    due = await store.lifecycle_due(now=now)
    failure = events.ended_refresh_failure(TokenState.EXPIRED)
    writes = [
        TokenEnd(t.token_id, TokenState.EXPIRED, "expired", events.token_expired(t), failure)
        for t in due.expired
    ]
    changed = await store.record_lifecycle(writes, now=now)
    return [w.token_id for w, c in zip(writes, changed, strict=True) if c]


async def warnings_due(store: _Store, *, now: datetime, days: Sequence[int]) -> list[TokenRecord]:
    """Active tokens with an expiry warning due; those looked at with nothing due have their
    next look moved to their next threshold."""
    due = await store.lifecycle_due(now=now)
    out: list[TokenRecord] = []
    moves = []
    for token in due.warnable:
        thresholds, next_at = events.warning_schedule(
            token.expires_at, days, token.warned_days, now
        )
        if thresholds:
            out.append(token)
        else:
            moves.append(WarningRescheduled(token.token_id, next_at))
    await store.record_lifecycle(moves, now=now)
    return out


async def record_warning(store: _Store, token_id: str, day: int, *, now: datetime) -> None:
    """Raise ``token.expiring`` for threshold ``day`` (once)."""
    token = await _token(store, token_id)
    write = TokenWarned(token_id, day, events.token_expiring(token, day))
    await store.record_lifecycle([write], now=now)


class _Peek:
    """A planner that decides nothing: the tick's section then only reads the due tokens."""

    def horizon(self, now: datetime) -> datetime:
        return now

    def decide(
        self,
        due: list[TokenRecord],
        ledger: list[LedgerEntry],
        accounts_of: dict[str, frozenset[str]],
        now: datetime,
    ) -> list[PlanWrite]:
        return []


async def due_tokens(store: _Store, *, now: datetime, limit: int) -> list[TokenRecord]:
    """The tokens the tick would plan at ``now``, earliest first."""
    return list((await store.plan_tick(now=now, limit=limit, planner=_Peek())).due)


async def next_refresh_due(store: _Store) -> datetime | None:
    """The earliest plan of an active token, as the tick's outcome reports it (at a ``now``
    before any plan, so nothing is due and nothing is written)."""
    early = datetime(1970, 1, 1, tzinfo=UTC)
    return (await store.plan_tick(now=early, limit=1, planner=_Peek())).next_due_at


async def set_plan(
    store: _Store,
    token_id: str,
    *,
    at: datetime | None,
    reason: str,
    now: datetime,
    event: NewEvent | None = None,
) -> None:
    """Set a token's next refresh by hand (an active token only), with ``event``."""
    params = {"id": token_id, "at": None if at is None else dt_in(at), "reason": reason}

    def write(db: sqlite3.Connection) -> None:
        if db.execute(Q["set_plan"], params).rowcount != 1:
            if not rows(db, "token_brief", {"id": token_id}):
                raise NotFoundError(f"token {token_id} not found")
            return
        if event is not None:
            emit(db, [event], now)

    await _run(store, write)


# -- leases and the ledger -------------------------------------------------------------------


async def register_claimer(
    store: _Store, *, now: datetime, ttl_seconds: float | None, sole: bool, max_running: int
) -> str:
    """Start a lease; returns the claimer's id."""
    lease = await store.lease(LeaseStart(ttl_seconds, sole, max_running), now=now)
    return lease.claimer


async def renew_claimer(store: _Store, claimer: str, *, now: datetime, ttl_seconds: float) -> bool:
    """Extend a lease; False when it was ended or forgotten."""
    return await store.lease(LeaseRenew(claimer, ttl_seconds), now=now)


async def release_claimer(store: _Store, claimer: str, *, now: datetime) -> None:
    """End a lease."""
    await store.lease(LeaseEnd(claimer), now=now)


async def budget(store: _Store) -> tuple[Budget, int]:
    """The shared running-commands budget and the slots held now."""
    return await _run(store, budget_of)


async def record_access(
    store: _Store, kind: AccessKind, *, now: datetime, token_id: str | None
) -> int:
    """A ledger row for an access outside imports."""
    access = await store.begin_access(None, kind, now=now, token_id=token_id)
    assert isinstance(access, int)
    return access


async def record_access_outcome(
    store: _Store,
    access_id: int,
    *,
    outcome: str,
    error_name: str | None = None,
    pressure: str | None = None,
) -> Budget:
    """Set a ledger row's outcome."""
    return await store.end_access(
        access_id, outcome=outcome, error_name=error_name, pressure=pressure
    )


# -- a claimed import's steps, as the pipeline writes them -------------------------------------


async def _job(store: _Store, claim: Claim, now: datetime) -> ImportJob:
    for job in await store.open_jobs():
        if job.import_id == claim.import_id:
            return job
    # Ended or unknown: the fenced write says which.
    return ImportJob(
        claim.import_id, ImportKind.INITIAL, ImportPhase.DONE, "", None, now.date(), now
    )


async def begin_access(
    store: _Store,
    claim: Claim,
    kind: AccessKind,
    *,
    now: datetime,
    token_id: str | None,
    session_id: str | None = None,
    quota: QuotaRule | None = None,
) -> int | QuotaAnswer:
    """Record a claimed import's access before it is sent, with ``import.started`` for its
    first Default Import."""
    event = None
    if kind == AccessKind.DEFAULT_IMPORT:
        job = await _job(store, claim, now)
        if job.default_import_attempts == 0:
            event = events.import_started(job)
    return await store.begin_access(
        claim, kind, now=now, token_id=token_id, session_id=session_id, quota=quota, event=event
    )


async def finish_success(
    store: _Store,
    claim: Claim,
    result: ImportResult,
    *,
    now: datetime,
    raw_reply: bytes | None,
    coverage_start: date,
    polls: int,
) -> MergeStats:
    """Store a claimed import's result."""
    job = await _job(store, claim, now)
    event = events.import_succeeded(job, result, polls=polls, now=now)
    return await store.advance(
        claim, Succeed(result, raw_reply, coverage_start, polls, event), now=now
    )


async def finish_failure(
    store: _Store,
    claim: Claim,
    failure: CommandFailure,
    *,
    now: datetime,
    polls: int | None = None,
    token: TokenOutcome | None = None,
) -> None:
    """End a claimed import as failed, with what the failure does to its token."""
    job = await _job(store, claim, now)
    write = events.failed(job, failure, polls)
    if token is not None and token.deferred_until is not None:
        deferred = events.quota_deferred(job, token.deferred_until)
        write = replace(write, deferred_until=token.deferred_until, token_event=deferred)
    elif token is not None and token.reauth_required:
        reauth = events.token_reauth_required(job, failure.name)
        write = replace(write, reauth_required=True, token_event=reauth)
    await store.advance(claim, write, now=now)


async def refuse_foreign_owner(
    store: _Store,
    claim: Claim,
    owner_echo: str | None,
    *,
    raw_reply: bytes | None,
    now: datetime,
    polls: int,
) -> bool:
    """The pipeline's check of a successful result's echoed owner before it is merged."""
    record = await get_import(store, claim.import_id)
    if record is None:
        return False
    echo = owner_echo or record.owner_echo
    if not owner_mismatch(record.owner_external_id, echo, record.token_echo):
        return False
    job = await _job(store, claim, now)
    failure = events.owner_mismatch_failure()
    write = events.refused(job, failure, raw_reply, polls=polls, owner_echo=echo)
    await store.advance(claim, write, now=now)
    return True


# -- webhooks --------------------------------------------------------------------------------


async def webhook_register(store: _Store, urls: Sequence[str], *, now: datetime) -> None:
    """Give each new endpoint a cursor at the feed's end."""
    await store.webhook_write(WebhookRegister(tuple(urls)), now=now)
