"""The daemon's parts, wired as ``aisd run`` wires them, on a virtual clock, for
:mod:`aisd.simulate`: the scenario's consents, the planner's wake-ups and the drain."""

from __future__ import annotations

import bisect
import functools
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio

from aisd import usecases
from aisd._simulation import ConsentPlan, next_on_grid
from aisd.clock import VirtualClock
from aisd.sandbox import MintedConsent, Sandbox
from aisd.store import ConsentIn, ImportPhase, Store, TokenState
from aisd.wiring import Core, Hooks

__all__ = ["World", "watched"]

DRAIN_STEP_SECONDS = 5.0


class World:
    """The daemon's parts as :func:`aisd.wiring.open_core` wires them for ``aisd run``, plus
    the simulated planner wake-ups.

    Args:
        core: the wired parts, on ``clock`` and a store :func:`watched` wraps.
        hooks: the hooks ``core`` was wired with; the world takes ``on_change``.
        clock: the virtual clock every part shares.
        box: the sandbox the consents are minted in.
    """

    def __init__(self, core: Core, hooks: Hooks, clock: VirtualClock, box: Sandbox) -> None:
        self._core = core
        self._settings = core.settings
        self._store = core.store
        self._clock = clock
        self._box = box
        self._origin = clock.now()
        self._tick = timedelta(seconds=self._settings.planner_tick_seconds)
        # The planner's wake-up: set by its alarm or by a change (which also sets _changed).
        self._wake = anyio.Event()
        self._changed = False
        hooks.on_change = self._changed_set
        self.pipeline = core.pipeline
        self.refresher = core.refresher
        # What the planner's wake-ups depend on, re-read only when it may have changed: the
        # expiry and pending warning moments of the active tokens, and the future not_before
        # of the queued imports.
        self._moments: list[datetime] | None = None
        self._token_counts: dict[str, int] = {}
        self._recount = False  # an import moved on since the token counts were read
        # The earliest future not_before of the queue, None once it may have changed: only a
        # tick that queued or ended something, a consent or an import moving on change it.
        self._deferred: datetime | None = None

    def _changed_set(self) -> None:
        self._changed = True
        self._wake.set()

    async def consents(self, plans: list[ConsentPlan]) -> None:
        """Mint each consent in the sandbox at its time and submit it as ``consent.submit``
        does."""
        minted: list[MintedConsent] = []
        for plan in plans:
            await self._clock.sleep_until(self._origin + plan.offset)
            accounts = None if plan.shares_with is None else minted[plan.shares_with].ibans[:1]
            consent = self._box.mint_consent(plan.owner_external_id, accounts=accounts)
            minted.append(consent)
            outcome = await usecases.submit_consent(
                self._store,
                ConsentIn(
                    owner_external_id=consent.owner_external_id,
                    session_id=consent.session_id,
                    session_signature=consent.signature,
                    multiple_access_id=consent.multiple_access_id,
                    target=consent.target,
                ),
                now=self._clock.now(),
                history_days=self._settings.first_import_history_days,
                access=plan.access,
            )
            self._moments = None
            self._deferred = None
            if outcome.created:
                self._core.services.wake_pipeline()

    async def planner(self, end: datetime) -> None:
        """Tick until ``end``: at each due time, and on the tick grid for what only the
        periodic tick notices; between ticks, wake the pipeline when a deferred import comes
        due (the daemon's pipeline re-checks its queue every second)."""
        next_tick = self._clock.now()
        while True:
            now = self._clock.now()
            if now >= end:
                return
            self._wake, self._changed = anyio.Event(), False
            if now >= next_tick:
                tick = await self.refresher.tick()
                if tick.ending:
                    # The daemon revokes off the tick; the sandbox answers at once, so
                    # inline is the same here and keeps the run deterministic.
                    await self.refresher.end_by_limit(tick.ending)
                if tick.expired or tick.warned or tick.ending:
                    self._moments = None
                next_tick = await self._next_tick(tick.next_due_at, now)
                if tick.queued or tick.ending:
                    self._deferred = None
            if self._deferred is None or self._deferred <= now:
                self._deferred = await self._next_not_before(now)
            deferred = self._deferred
            cancel = self._clock.alarm(min(next_tick, end, deferred), self._wake)
            await self._wake.wait()
            cancel()
            if self._changed:
                # A finished import makes its token due; the daemon's next periodic tick
                # finds it.
                next_tick = min(next_tick, self._after(self._clock.now()))
                self._recount = True
                self._deferred = None
            if self._clock.now() >= deferred:
                self.pipeline.wake()

    async def drain(self, until: datetime) -> None:
        """Let imports under way end (no new refresh is planned), until ``until`` at most."""
        while self._clock.now() < until:
            if not await self._store.open_jobs():
                break
            self.pipeline.wake()
            await self._clock.sleep(DRAIN_STEP_SECONDS)
        self.pipeline.stop_accepting()

    def _at_or_after(self, moment: datetime) -> datetime:
        """The first periodic tick at or after ``moment``."""
        return next_on_grid(self._origin, self._tick, moment)

    def _after(self, moment: datetime) -> datetime:
        """The first periodic tick strictly after ``moment``."""
        return self._at_or_after(moment + timedelta(microseconds=1))

    async def _recount_tokens(self) -> None:
        """Forget the tokens' moments when a token changed state outside a tick (the pipeline
        ends a token whose access upstream refuses)."""
        self._recount = False
        counts = await self._token_states()
        if counts != self._token_counts:
            self._token_counts = counts
            self._moments = None

    async def _next_tick(self, due: datetime | None, now: datetime) -> datetime:
        # A due time is honoured exactly (the daemon's DateTrigger); one not in the future
        # would spin, so it waits for the next periodic tick instead.
        candidates = [] if due is None else [due if due > now else self._after(now)]
        if self._recount:
            await self._recount_tokens()
        if self._moments is None:
            self._moments = await self._token_moments()
        first_future = bisect.bisect_right(self._moments, now)
        if first_future:
            # A moment passed and not yet acted on: the next periodic tick acts on it.
            candidates.append(self._after(now))
        if first_future < len(self._moments):
            candidates.append(self._at_or_after(self._moments[first_future]))
        return min(candidates, default=datetime.max.replace(tzinfo=now.tzinfo))

    async def _token_moments(self) -> list[datetime]:
        """Every active token's expiry and the moments of its warnings not yet sent, sorted."""
        days = self._settings.expiry_warning_days
        moments = []
        for token in await self._store.list_tokens(state=TokenState.ACTIVE):
            moments.append(token.expires_at)
            moments += [
                token.expires_at - timedelta(days=d) for d in days if d not in token.warned_days
            ]
        self._token_counts = await self._token_states()
        return sorted(moments)

    async def _token_states(self) -> dict[str, int]:
        return (await self._store.status(now=self._clock.now())).tokens

    async def _next_not_before(self, now: datetime) -> datetime:
        """The earliest future ``not_before`` of a queued import: the daemon's pipeline
        re-checks its queue every second, which virtual time must not jump over. An import in
        flight waits for its next step in its own task (and is adopted whatever its
        ``not_before``), so its time wakes nobody."""
        jobs = await self._store.open_jobs()
        later = [
            j.not_before
            for j in jobs
            if j.phase == ImportPhase.QUEUED and j.not_before is not None and j.not_before > now
        ]
        return min(later, default=datetime.max.replace(tzinfo=now.tzinfo))


class _Watched:
    """The store, each call marked as work off the event loop, so the virtual clock never
    moves while a query runs in aiosqlite's thread."""

    def __init__(self, store: Store, clock: VirtualClock) -> None:
        self._store = store
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not inspect.iscoroutinefunction(target):
            return target
        wrapped = _external(self._clock, target)
        # Kept on the instance: later lookups find it without coming here again.
        setattr(self, name, wrapped)
        return wrapped


def _external(clock: VirtualClock, target: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(target)
    async def call(*args: Any, **kwargs: Any) -> Any:
        with clock.external():
            return await target(*args, **kwargs)

    return call


def watched(store: Store, clock: VirtualClock) -> Store:
    """``store`` with every call marked as work off the event loop on ``clock``."""
    wrapped: Store = _Watched(store, clock)
    return wrapped
