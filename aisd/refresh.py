"""Multiple access in the shell: the planner tick, the quota rule, expiry, revocation.

The rules live in :mod:`aisd.planner` (pure). The quota is decided inside the store's quota
section: one transaction that reads the ledger, asks the rule here (:meth:`Refresher.decide`,
:class:`TickRule`) and records the access or the queued refresh, so no lock outside the
database protects it. APScheduler merely calls :meth:`Refresher.tick`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import structlog

from aisd import events
from aisd.clock import Clock, iso
from aisd.kontomatik import KontomatikClient, KontomatikError, RetryLaterError, TokenDeadError
from aisd.planner import (
    Access,
    Plan,
    Reason,
    Rules,
    TokenPlanInput,
    decide_due,
    ledger_horizon,
    may_refresh_now,
    reach,
    window_usage,
)
from aisd.planner import effective_now as planner_now
from aisd.settings import Settings
from aisd.store import (
    AccessKind,
    ConflictError,
    LedgerEntry,
    LifecycleWrite,
    NewEvent,
    PlanWrite,
    QuotaAnswer,
    QuotaView,
    RevocationInFlight,
    RevocationSent,
    Store,
    TokenEnd,
    TokenRecord,
    TokenState,
    TokenWarned,
    WarningRescheduled,
)

log = structlog.get_logger("aisd.refresh")

# Tokens handled per tick at most; the rest stay due and are taken by the next tick.
TICK_BATCH = 500
# Reuse sessions return at most this much history.
REUSE_HISTORY_DAYS = 90
REVOKE_ATTEMPTS = 4
REVOKE_RETRY = timedelta(minutes=10)
# Upstream refusals raise their own quota.deferred when they happen (in the store).
DEFERRED_REASONS = frozenset({Reason.QUOTA})


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one planner tick did."""

    expired: int
    warned: int
    due: int
    queued: int
    ending: tuple[tuple[str, str], ...]  # (token id, reason) whose cost limit is reached
    next_due_at: datetime | None


class RefreshRefused(Exception):
    """An on-demand refresh cannot run now; ``next_possible_at`` says when (None: never)."""

    def __init__(self, reason: str, next_possible_at: datetime | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_possible_at = next_possible_at


class RevokeFailed(Exception):
    """Upstream did not confirm a revocation after retries; the token stays as it was."""


def plan_input(token: TokenRecord) -> TokenPlanInput:
    """The planner's view of a stored token."""
    refresh_until = None
    if token.refresh_until is not None:
        refresh_until = datetime.combine(
            token.refresh_until + timedelta(days=1), datetime.min.time(), token.created_at.tzinfo
        )
    return TokenPlanInput(
        token_id=token.token_id,
        created_at=token.created_at,
        expires_at=token.expires_at,
        accounts=token.accounts,
        last_refresh_at=token.last_refresh_at,
        failures=token.failures,
        upstream_deferred_until=token.upstream_deferred_until,
        refresh_until=refresh_until,
    )


def refresh_since(token: TokenRecord, today: date, overlap_days: int) -> date:
    """``since`` of a refresh: the last success minus an overlap, within reuse history."""
    floor = today - timedelta(days=REUSE_HISTORY_DAYS)
    if token.last_import_at is None:
        return floor
    return max(floor, token.last_import_at.date() - timedelta(days=overlap_days))


def cost_limit_reached(token: TokenRecord, now: datetime) -> str | None:
    """The consent's own limit that ends its refreshes, if one is reached."""
    if token.max_imports is not None and token.imports_done >= token.max_imports:
        return "maxImports reached"
    if token.refresh_until is not None and now.date() > token.refresh_until:
        return "refreshUntil reached"
    return None


def _ledger(entries: Sequence[LedgerEntry]) -> list[Access]:
    return [Access(e.token_id, e.at) for e in entries]


def _plan_write(token: TokenRecord, p: Plan) -> PlanWrite:
    """A plan as the store records it, with ``quota.deferred`` when the reason turns to it."""
    event = None
    if p.reason in DEFERRED_REASONS and token.plan_reason != p.reason.value:
        event = NewEvent(
            "quota.deferred",
            owner_external_id=token.owner_external_id,
            token_id=token.token_id,
            data={
                "reason": p.reason.value,
                "nextPossibleAt": iso(p.at) if p.at else None,
                "accounts": [
                    {"iban": u.account, "used": u.used, "limit": u.limit} for u in p.usage if u.full
                ],
            },
        )
    return PlanWrite(token.token_id, at=p.at, reason=p.reason.value, event=event)


@dataclass(frozen=True, slots=True)
class TickRule:
    """The refresher's pure tick planner, as the store's tick section asks it."""

    refresher: Refresher

    def horizon(self, now: datetime) -> datetime:
        """How far back the ledger counts at ``now``."""
        return self.refresher.horizon(now)

    def decide(
        self,
        due: list[TokenRecord],
        ledger: list[LedgerEntry],
        accounts_of: dict[str, frozenset[str]],
        now: datetime,
    ) -> list[PlanWrite]:
        """See :meth:`Refresher.plan_due`."""
        return self.refresher.plan_due(due, ledger, accounts_of, now)


class Refresher:
    """Plans and starts refreshes, ends tokens, and answers on-demand requests."""

    def __init__(
        self,
        store: Store,
        client: KontomatikClient,
        clock: Clock,
        *,
        rules: Rules,
        overlap_days: int,
        warning_days: Sequence[int],
        wake_pipeline: Callable[[], None],
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._rules = rules
        self._overlap_days = overlap_days
        self._warning_days = tuple(warning_days)
        self._wake_pipeline = wake_pipeline

    @classmethod
    def from_settings(
        cls,
        store: Store,
        client: KontomatikClient,
        clock: Clock,
        settings: Settings,
        *,
        wake_pipeline: Callable[[], None],
    ) -> Refresher:
        """A refresher with the planner's rules and windows from the settings."""
        return cls(
            store,
            client,
            clock,
            rules=Rules(refreshes_per_day=settings.refreshes_per_day),
            overlap_days=settings.refresh_overlap_days,
            warning_days=settings.expiry_warning_days,
            wake_pipeline=wake_pipeline,
        )

    @property
    def rules(self) -> Rules:
        """The planner's rules in force."""
        return self._rules

    # -- the tick ------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """Expire, warn, plan the due tokens and queue the refreshes that may run now.

        Tokens whose own cost limit is reached are returned in ``TickReport.ending`` rather than
        revoked here: a revocation calls upstream, which must not hold up the tick or the quota
        section. The caller hands them to :meth:`end_by_limit`.
        """
        started = time.perf_counter()
        store, now = self._store, self._clock.now()
        expired, warned = await self._lifecycle(now)
        outcome = await store.plan_tick(now=now, limit=TICK_BATCH, planner=TickRule(self))
        due = outcome.due
        ending = [(t.token_id, r) for t in due if (r := cost_limit_reached(t, now))]
        queued = len(outcome.queued)
        if queued:
            self._wake_pipeline()
        report = TickReport(
            expired=expired,
            warned=warned,
            due=len(due),
            queued=queued,
            ending=tuple(ending),
            next_due_at=outcome.next_due_at,
        )
        if report.due or report.expired or report.warned:
            log.info(
                "planner.tick",
                due=report.due,
                queued=report.queued,
                expired=report.expired,
                warned=report.warned,
                ending=len(report.ending),
                nextDueAt=iso(report.next_due_at) if report.next_due_at else None,
                durationMs=round((time.perf_counter() - started) * 1000, 1),
            )
        return report

    async def end_by_limit(self, ending: Sequence[tuple[str, str]]) -> int:
        """Revoke tokens whose consent's own limit is reached; returns how many were revoked.
        A token whose revocation fails upstream stays due and is tried again at a later tick."""
        revoked = 0
        for token_id, reason in ending:
            try:
                revoked += await self.revoke(token_id, reason=reason) == TokenState.REVOKED
            except RevokeFailed as exc:
                log.warning("token.revoke_failed", tokenId=token_id, reason=reason, error=str(exc))
        return revoked

    def plan_due(
        self,
        due: list[TokenRecord],
        ledger_rows: list[LedgerEntry],
        accounts_of: dict[str, frozenset[str]],
        now: datetime,
    ) -> list[PlanWrite]:
        """The tick's decisions (pure): the refreshes that may run now are queued, every other
        due token gets its next time and reason; a token whose cost limit is reached is due
        again only if its revocation fails."""
        ledger = _ledger(ledger_rows)
        ending = {t.token_id for t in due if cost_limit_reached(t, now)}
        inputs = [plan_input(t) for t in due if t.token_id not in ending]
        # Every due token's accounts as read with it (the ending ones' too: their accesses
        # still count against the accounts they reach).
        mapping = {**accounts_of, **{t.token_id: t.accounts for t in due}}
        decided = decide_due(inputs, ledger, mapping, self._rules, now)
        picked = {access.token_id for access in decided.picked}
        writes: list[PlanWrite] = []
        for token in due:
            if token.token_id in ending:
                writes.append(
                    PlanWrite(token.token_id, at=now + REVOKE_RETRY, reason=Reason.ENDED.value)
                )
            elif token.token_id in picked:
                since = refresh_since(token, now.date(), self._overlap_days)
                writes.append(PlanWrite(token.token_id, queue_since=since))
            else:
                writes.append(_plan_write(token, decided.plans[token.token_id]))
        return writes

    # -- the quota rule inside the store's quota section ---------------------------------------

    def horizon(self, now: datetime) -> datetime:
        """How far back the ledger counts at ``now``."""
        return ledger_horizon(now, self._rules)

    def decide(self, view: QuotaView) -> QuotaAnswer:
        """Whether a Reuse (or an on-demand refresh) of ``view.token`` may go now (pure)."""
        token, now = view.token, view.now
        if token is None or token.state != TokenState.ACTIVE:
            return QuotaAnswer(allowed=False, at=now)
        ledger = _ledger(view.ledger)
        ok, next_at = may_refresh_now(plan_input(token), ledger, view.accounts_of, self._rules, now)
        return QuotaAnswer(allowed=ok, at=planner_now(now, ledger), retry_at=next_at)

    # -- on demand -----------------------------------------------------------------------------

    async def refresh_now(self, token_id: str) -> str:
        """Queue a refresh now if the quota allows (decided in the store's quota section).

        Raises:
            LookupError: no such token.
            RefreshRefused: not active, a refresh already open, or no room in a window.
        """
        store, now = self._store, self._clock.now()
        tokens = await store.list_tokens(token_ids=[token_id])
        if not tokens:
            raise LookupError(token_id)
        token = tokens[0]
        if token.state != TokenState.ACTIVE:
            raise RefreshRefused(f"token is {token.state.value}", None)
        since = refresh_since(token, now.date(), self._overlap_days)
        try:
            queued = await store.queue_refresh(token_id, now=now, since=since, quota=self)
        except ConflictError:
            # It left active since it was read.
            raise RefreshRefused("token is no longer active", None) from None
        if isinstance(queued, QuotaAnswer):
            raise RefreshRefused("quota", queued.retry_at)
        if queued is None:
            raise RefreshRefused("a refresh is already queued or running", None)
        self._wake_pipeline()
        return queued

    async def explain(self, tokens: Sequence[TokenRecord]) -> dict[str, dict[str, object]]:
        """Per token: accesses in the current window per account, when the next frees, the
        next planned refresh and why."""
        if not tokens:
            return {}
        now = self._clock.now()
        ledger_rows, accounts_of = await self._store.reuse_ledger(
            [t.token_id for t in tokens], since=ledger_horizon(now, self._rules)
        )
        ledger = _ledger(ledger_rows)
        mapping = {**accounts_of, **{t.token_id: t.accounts for t in tokens}}
        window_start = now - self._rules.window
        out: dict[str, dict[str, object]] = {}
        for token in tokens:
            quota = []
            for account in sorted(reach(token.token_id, token.accounts)):
                usage = window_usage(ledger, mapping, account, now, self._rules)
                quota.append(
                    {
                        "iban": account,
                        "used": usage.used,
                        "limit": usage.limit,
                        "nextFreeAt": iso(usage.next_free_at) if usage.next_free_at else None,
                    }
                )
            own = sum(1 for e in ledger if e.token_id == token.token_id and e.at > window_start)
            out[token.token_id] = {
                "refreshesLast24h": own,
                "quota": quota,
                "planReason": token.plan_reason,
                "failures": token.failures,
            }
        return out

    # -- revocation ----------------------------------------------------------------------------

    async def revoke(self, token_id: str, *, reason: str) -> TokenState:
        """Revoke upstream (retrying transient errors), then stop every refresh. Idempotent.

        Returns:
            The token's state afterwards (a token already final keeps its state).

        Raises:
            LookupError: no such token.
            RevokeFailed: upstream kept failing; nothing changed locally.
        """
        store = self._store
        tokens = await store.list_tokens(token_ids=[token_id])
        if not tokens:
            raise LookupError(token_id)
        if tokens[0].state != TokenState.ACTIVE:
            return tokens[0].state
        secret = await store.multiple_access_id(token_id)
        if secret is not None:
            await self._revoke_upstream(token_id, secret)
        revoked = TokenEnd(
            token_id,
            TokenState.REVOKED,
            reason,
            events.token_ended(tokens[0], TokenState.REVOKED, reason),
            events.ended_refresh_failure(TokenState.REVOKED),
        )
        await store.record_lifecycle([revoked], now=self._clock.now())
        return TokenState.REVOKED

    async def _lifecycle(self, now: datetime) -> tuple[int, int]:
        """Expire the tokens whose end passed and raise the expiry warnings due, in one
        transaction; returns how many of each."""
        due = await self._store.lifecycle_due(now=now)
        failure = events.ended_refresh_failure(TokenState.EXPIRED)
        writes: list[LifecycleWrite] = [
            TokenEnd(t.token_id, TokenState.EXPIRED, "expired", events.token_expired(t), failure)
            for t in due.expired
        ]
        for token in due.warnable:
            days, _ = events.warning_schedule(
                token.expires_at, self._warning_days, token.warned_days, now
            )
            writes += [
                TokenWarned(token.token_id, d, events.token_expiring(token, d)) for d in days
            ]
            # The threshold after those raised now: nothing is looked at again before it.
            _, next_at = events.warning_schedule(
                token.expires_at, self._warning_days, {*token.warned_days, *days}, now
            )
            writes.append(WarningRescheduled(token.token_id, next_at))
        changed = await self._store.record_lifecycle(writes, now=now)
        expired = sum(
            1 for w, c in zip(writes, changed, strict=True) if c and isinstance(w, TokenEnd)
        )
        warned = sum(
            1 for w, c in zip(writes, changed, strict=True) if c and isinstance(w, TokenWarned)
        )
        return expired, warned

    async def _revoke_upstream(self, token_id: str, secret: str) -> None:
        for attempt in range(REVOKE_ATTEMPTS):
            try:
                access = await self._store.begin_access(
                    None, AccessKind.REVOKE, now=self._clock.now(), token_id=token_id
                )
                assert isinstance(access, int), "an access outside imports has no quota"
            except RevocationSent:
                return  # another daemon's revocation was accepted upstream
            except RevocationInFlight:
                # Another daemon's revocation awaits its answer: one Revoke, not two.
                await self._clock.sleep(2.0**attempt)
                continue
            try:
                await self._client.revoke_multiple_access(secret)
            except TokenDeadError as exc:
                # Already dead upstream: the revocation's purpose is met.
                await self._store.end_access(access, outcome="error", error_name=exc.name)
                return
            except RetryLaterError as exc:
                await self._store.end_access(
                    access, outcome="error" if exc.sent else "not_sent", error_name=exc.name
                )
                log.warning("token.revoke_retry", tokenId=token_id, error=exc.name, attempt=attempt)
                await self._clock.sleep(2.0**attempt)
                continue
            except KontomatikError as exc:
                await self._store.end_access(access, outcome="error", error_name=exc.name)
                raise RevokeFailed(exc.name) from None
            await self._store.end_access(access, outcome="ok")
            return
        raise RevokeFailed("upstream kept failing")
