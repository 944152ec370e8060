"""The daemon's parts wired as ``aisd run`` wires them, on a virtual clock, for
:mod:`aisd.simulate`: the scenario's consents, the planner's wake-ups and the drain."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio

from aisd._simulation import ConsentPlan, next_on_grid
from aisd.clock import VirtualClock
from aisd.kontomatik import KontomatikClient
from aisd.pipeline import Pipeline, PipelineConfig
from aisd.refresh import Refresher
from aisd.sandbox import MintedConsent, Sandbox
from aisd.settings import Settings
from aisd.store import ConsentIn, Store, TokenState

__all__ = ["World", "watched"]

DRAIN_STEP_SECONDS = 5.0
_ALL = 1_000_000_000


class World:
    """The daemon's parts wired as ``aisd run`` wires them, plus the simulated planner wake-ups.

    Args:
        settings: the configuration in force.
        clock: the virtual clock every part shares.
        store: the store, as :func:`watched` wraps it.
        box: the sandbox the consents are minted in.
        client: the Kontomatik client speaking to the sandbox.
    """

    def __init__(
        self,
        settings: Settings,
        clock: VirtualClock,
        store: Store,
        box: Sandbox,
        client: KontomatikClient,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._store = store
        self._box = box
        self._origin = clock.now()
        self._tick = timedelta(seconds=settings.planner_tick_seconds)
        self._changed = anyio.Event()
        self.refresher = Refresher.from_settings(
            store, client, clock, settings, wake_pipeline=self._wake_pipeline
        )
        self.pipeline = Pipeline(
            store,
            client,
            PipelineConfig.from_settings(settings),
            clock,
            gate=self.refresher,
            on_change=self._changed_set,
        )

    def _wake_pipeline(self) -> None:
        self.pipeline.wake()

    def _changed_set(self) -> None:
        self._changed.set()

    async def consents(self, plans: list[ConsentPlan]) -> None:
        """Mint each consent in the sandbox at its time and submit it as ``consent.submit``."""
        minted: list[MintedConsent] = []
        history = self._settings.first_import_history_days
        for plan in plans:
            await self._clock.sleep_until(self._origin + plan.offset)
            accounts = None if plan.shares_with is None else minted[plan.shares_with].ibans[:1]
            consent = self._box.mint_consent(plan.owner_external_id, accounts=accounts)
            minted.append(consent)
            now = self._clock.now()
            await self._store.submit_consent(
                ConsentIn(
                    owner_external_id=consent.owner_external_id,
                    session_id=consent.session_id,
                    session_signature=consent.signature,
                    multiple_access_id=consent.multiple_access_id,
                    target=consent.target,
                ),
                now=now,
                since=now.date() - timedelta(days=history),
                expires_at=now + plan.access,
            )
            self.pipeline.wake()

    async def planner(self, end: datetime) -> None:
        """Tick until ``end``: at each due time, and on the tick grid for what only the
        periodic tick notices; between ticks, wake for deferred imports coming due."""
        next_tick = self._clock.now()
        while True:
            now = self._clock.now()
            if now >= end:
                return
            self._changed = changed = anyio.Event()
            if now >= next_tick:
                tick = await self.refresher.tick()
                if tick.ending:
                    # The daemon revokes off the tick; the sandbox answers at once, so
                    # inline is the same here and keeps the run deterministic.
                    await self.refresher.end_by_limit(tick.ending)
                next_tick = await self._next_tick(tick.next_due_at, now)
            wake = min(next_tick, end, await self._next_not_before(now))
            await _nap(self._clock, wake, changed)
            if changed.is_set():
                # A finished import makes its token due; the daemon's next periodic tick
                # finds it.
                next_tick = min(next_tick, self._after(self._clock.now()))

    async def drain(self, until: datetime) -> None:
        """Let imports under way end (no new refresh is planned), until ``until`` at most."""
        while self._clock.now() < until:
            if not await self._store.open_jobs():
                break
            await self._clock.sleep(DRAIN_STEP_SECONDS)
        self.pipeline.stop_accepting()

    def _at_or_after(self, moment: datetime) -> datetime:
        """The first periodic tick at or after ``moment``."""
        return next_on_grid(self._origin, self._tick, moment)

    def _after(self, moment: datetime) -> datetime:
        """The first periodic tick strictly after ``moment``."""
        return self._at_or_after(moment + timedelta(microseconds=1))

    async def _next_tick(self, due: datetime | None, now: datetime) -> datetime:
        # A due time is honoured exactly (the daemon's DateTrigger); one not in the future
        # would spin, so it waits for the next periodic tick instead.
        candidates = [] if due is None else [due if due > now else self._after(now)]
        days = self._settings.expiry_warning_days
        for token in await self._store.list_tokens(state=TokenState.ACTIVE):
            moments = [token.expires_at] + [
                token.expires_at - timedelta(days=d) for d in days if d not in token.warned_days
            ]
            candidates += [self._at_or_after(m) if m > now else self._after(now) for m in moments]
        return min(candidates, default=datetime.max.replace(tzinfo=now.tzinfo))

    async def _next_not_before(self, now: datetime) -> datetime:
        """The earliest future ``not_before`` of a waiting import: the daemon's pipeline
        re-checks its queue every second, which virtual time must not jump over."""
        jobs = await self._store.open_jobs()
        later = [j.not_before for j in jobs if j.not_before is not None and j.not_before > now]
        return min(later, default=datetime.max.replace(tzinfo=now.tzinfo))


async def _nap(clock: VirtualClock, until: datetime, changed: anyio.Event) -> None:
    """Sleep until ``until`` on ``clock`` or until ``changed`` is set, whichever comes first."""
    async with anyio.create_task_group() as tg:

        async def alarm() -> None:
            await clock.sleep_until(until)
            tg.cancel_scope.cancel()

        tg.start_soon(alarm)
        await changed.wait()
        tg.cancel_scope.cancel()


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
        return _external(self._clock, target)


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
