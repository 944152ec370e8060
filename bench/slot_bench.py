"""Benchmark of slot use: a backlog of consents through the real pipeline, store and sandbox.

Usage: ``python bench/slot_bench.py [--durations 5,8,15,60] [--consents N] [--naive] [--seed S]``

For each command duration D, N consents (initial imports) are queued in a fresh SQLite store and
drained by the real :class:`~aisd.pipeline.Pipeline` (8 slots, polls 2-5 s apart) against the
in-process sandbox with ``command_seconds = D``. Per D it prints:

* ``slot use``: time commands ran upstream (N x D) / (8 x time to drain the backlog): the share
  of the provider's 8-command pool kept busy; 1.0 is the unreachable ideal.
* ``steady``: the same share from the middle command's start to the last one's: past the
  learning of the first rounds and before the drain's tail.
* ``imports/min``: N / drain time.
* ``delay p50 / p90``: per command, from its upstream end (creation + D) to aisd's first poll
  at or after it: how long a finished command keeps holding a slot.
* ``polls/import``: Get Import Result calls per import.
* ``handoff``: mean time from a command's final poll to the Default Import that takes its slot
  (storing the result plus dispatch).

Time is virtual but faithful: a :class:`VirtualClock` runs at real speed while anything works
(an HTTP call into the sandbox, a store call) and jumps ahead only when every task waits on the
clock, so real overheads count fully and the idle waits between polls cost no real time.
``--naive`` swaps the learned poll placement for a uniform random 2-5 s spacing, for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import inspect
import itertools
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from unittest import mock

import anyio
import anyio.lowlevel
import httpx
import structlog

import aisd.pipeline
from aisd.kontomatik import Command, KontomatikClient
from aisd.pipeline import Pipeline, PipelineConfig
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxApp, SandboxConfig
from aisd.store import ConsentIn, ImportState, Store, open_store

START = datetime(2026, 5, 1, 8, tzinfo=UTC)
SLOTS = 8
# How often the clock's driver looks again while something works (real seconds).
REAL_TICK = 0.001
# Yields that must pass without any activity before the system counts as idle: a woken task
# reaches its next store or HTTP call within one or two.
QUIET_YIELDS = 8


class VirtualClock:
    """A :class:`aisd.clock.Clock` that runs at real speed while work is in flight and skips
    ahead to the next sleeper's deadline when nothing but sleepers is left.

    Work is whatever runs inside :meth:`working` (the bench wraps every store and client call).
    """

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._real0 = time.monotonic()
        self._skipped = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._busy = 0
        self._activity = 0
        self._frozen_at: float | None = None

    def monotonic(self) -> float:
        """Seconds since the clock was made: real time plus every skip."""
        if self._frozen_at is not None:
            return self._frozen_at
        return time.monotonic() - self._real0 + self._skipped

    def now(self) -> datetime:
        """The virtual UTC time."""
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        self._activity += 1
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self.monotonic() + seconds, next(self._seq), event))
        await event.wait()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Mark real work in flight: time may not jump meanwhile."""
        self._busy += 1
        self._activity += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._activity += 1

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Stop time while the provider's own work runs: it happens on its servers, in
        parallel, not on aisd's CPU. The block must not yield to other tasks."""
        if self._frozen_at is not None:
            raise RuntimeError("the frozen block yielded to another frozen block")
        self._frozen_at = self.monotonic()
        began = time.monotonic()
        try:
            yield
        finally:
            self._frozen_at = None
            self._skipped -= time.monotonic() - began

    async def drive(self) -> None:
        """Wake sleepers when due, jumping over idle time; run this in its own task."""
        while True:
            now = self.monotonic()
            while self._sleepers and self._sleepers[0][0] <= now:
                heapq.heappop(self._sleepers)[2].set()
            if self._sleepers and await self._idle():
                self._skipped += max(0.0, self._sleepers[0][0] - self.monotonic())
                continue
            ahead = self._sleepers[0][0] - now if self._sleepers else REAL_TICK
            await anyio.sleep(min(REAL_TICK, ahead))

    async def _idle(self) -> bool:
        if self._busy:
            return False
        mark = self._activity
        for _ in range(QUIET_YIELDS):
            await anyio.lowlevel.checkpoint()
        return self._busy == 0 and self._activity == mark


class Counted:
    """A proxy whose coroutine methods run inside ``clock.working()``."""

    def __init__(self, target: object, clock: VirtualClock) -> None:
        self._target = target
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        method = cast(Callable[..., Awaitable[Any]], attr)
        clock = self._clock

        async def call(*args: Any, **kwargs: Any) -> Any:
            with clock.working():
                return await method(*args, **kwargs)

        return call


class UpstreamApp:
    """The sandbox's ASGI app, run with the clock frozen (see :meth:`VirtualClock.frozen`)."""

    def __init__(self, app: SandboxApp, clock: VirtualClock) -> None:
        self._app = app
        self._clock = clock

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """Serve one request in no virtual time."""
        with self._clock.frozen():
            await self._app(scope, receive, send)


class TimedSandbox(Sandbox):
    """The sandbox, noting when each command was created (its upstream start)."""

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], datetime]) -> None:
        super().__init__(config, clock=clock)
        self.created: dict[str, datetime] = {}

    def default_import(self, session_id: str, signature: str, since: date) -> Command:
        """See :meth:`Sandbox.default_import`; records the command's creation time."""
        command = super().default_import(session_id, signature, since)
        self.created[command.id] = self.clock()
        return command


def naive_poll_delay(
    elapsed: float,
    aim: float | None,
    *,
    min_seconds: float,
    max_seconds: float,
    phase: float = 0.0,
) -> float:
    """The straightforward poller: every gap uniform in ``[min, max]``, nothing learned."""
    del elapsed, aim, phase
    return random.uniform(min_seconds, max_seconds)


@dataclass(frozen=True, slots=True)
class Figures:
    """One run's measurements (virtual seconds)."""

    duration: float
    consents: int
    drain: float
    delays: list[float]
    polls: int
    handoffs: list[float]
    steady_use: float
    failed: int

    @property
    def slot_use(self) -> float:
        """Upstream command time over the pool's capacity during the drain."""
        return self.consents * self.duration / (SLOTS * self.drain)


async def _imports(store: Store) -> dict[str, int]:
    """Imports by state."""
    return (await store.status(now=datetime.now(UTC))).imports


async def run_one(duration: float, consents: int, seed: int) -> Figures:
    """Drain ``consents`` initial imports of ``duration`` seconds each; measure."""
    clock = VirtualClock(START)
    sandbox = TimedSandbox(
        SandboxConfig(command_seconds=duration, seed=seed, max_running_commands=SLOTS),
        clock=clock.now,
    )
    finished = anyio.Event()
    done_at: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_store(Path(tmp) / "bench.db") as raw_store,
            KontomatikClient(
                "http://sandbox.test",
                DEFAULT_API_KEY,
                transport=httpx.ASGITransport(app=UpstreamApp(SandboxApp(sandbox), clock)),
            ) as raw_client,
        ):
            store = cast(Store, Counted(raw_store, clock))
            client = cast(KontomatikClient, Counted(raw_client, clock))
            for i in range(consents):
                minted = sandbox.mint_consent(f"owner-{i}", multiple_access=False)
                now = clock.now()
                await raw_store.submit_consent(
                    ConsentIn(f"owner-{i}", minted.session_id, minted.signature),
                    now=now,
                    since=now.date() - timedelta(days=365),
                    expires_at=now + timedelta(days=180),
                )

            def on_change() -> None:
                done_at.append(clock.monotonic())
                if len(done_at) >= consents:
                    finished.set()

            pipeline = Pipeline(
                store,
                client,
                PipelineConfig(max_running=SLOTS),
                clock,
                on_change=on_change,
                rng=random.Random(seed),
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(clock.drive)
                began = clock.monotonic()
                await tg.start(pipeline.run)
                while True:
                    await finished.wait()
                    counts = await _imports(raw_store)
                    if sum(counts.get(s, 0) for s in ("successful", "failed")) >= consents:
                        break
                    finished = anyio.Event()
                tg.cancel_scope.cancel()
            counts = await _imports(raw_store)
    return measure(sandbox, duration, consents, max(done_at) - began, counts)


def measure(
    sandbox: TimedSandbox,
    duration: float,
    consents: int,
    drain: float,
    counts: dict[str, int],
) -> Figures:
    """Delays and handoffs from the sandbox's record of creations and polls."""
    delays: list[float] = []
    final_polls: list[datetime] = []
    polls = 0
    for command_id, created in sandbox.created.items():
        end = created + timedelta(seconds=duration)
        times = sandbox.stats.polls_by_command.get(command_id, [])
        polls += len(times)
        after = [t for t in times if t >= end]
        if after:
            delays.append((after[0] - end).total_seconds())
            final_polls.append(after[0])
    starts = sorted(sandbox.created.values())
    final_polls.sort()
    # Past the learning: the pool's busy share from the middle start to the last one, before
    # the tail where fewer than 8 commands are left.
    window = (
        (starts[len(starts) // 2] - START).total_seconds(),
        (starts[-1] - START).total_seconds(),
    )
    busy = sum(
        max(0.0, min(window[1], s + duration) - max(window[0], s))
        for s in ((t - START).total_seconds() for t in starts)
    )
    steady = busy / (SLOTS * (window[1] - window[0])) if window[1] > window[0] else float("nan")
    # The k-th command past the first full round took the slot freed by the (k-8)-th final poll.
    handoffs = [
        (start - freed).total_seconds()
        for start, freed in zip(starts[SLOTS:], final_polls, strict=False)
    ]
    return Figures(
        duration=duration,
        consents=consents,
        drain=drain,
        delays=delays,
        polls=polls,
        handoffs=handoffs,
        steady_use=steady,
        failed=counts.get(ImportState.FAILED.value, 0),
    )


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (inclusive method); NaN when empty."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def report(fig: Figures, real_seconds: float) -> str:
    """One table row."""
    return (
        f"{fig.duration:>5g} {fig.consents:>5} {fig.drain:>8.1f} {fig.slot_use:>8.3f} "
        f"{fig.steady_use:>6.3f} "
        f"{60 * fig.consents / fig.drain:>11.1f} {quantile(fig.delays, 0.5):>9.2f} "
        f"{quantile(fig.delays, 0.9):>9.2f} {fig.polls / fig.consents:>12.2f} "
        f"{statistics.fmean(fig.handoffs) if fig.handoffs else float('nan'):>9.3f} "
        f"{fig.failed:>6} {real_seconds:>7.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run each duration and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", default="5,8,15,60", help="command seconds, comma-separated")
    parser.add_argument("--consents", type=int, default=64, help="backlog size (default 64)")
    parser.add_argument("--naive", action="store_true", help="uniform random 2-5 s polling")
    parser.add_argument("--seed", type=int, default=1, help="sandbox and jitter seed")
    args = parser.parse_args(argv)
    durations = [float(d) for d in args.durations.split(",")]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    random.seed(args.seed)
    placement = (
        mock.patch.object(aisd.pipeline, "poll_delay", naive_poll_delay)
        if args.naive
        else contextlib.nullcontext()
    )
    print(f"poller: {'naive (uniform 2-5 s)' if args.naive else 'aisd (learned placement)'}")
    print(
        f"{'D s':>5} {'N':>5} {'drain s':>8} {'slot use':>8} {'steady':>6} {'imports/min':>11} "
        f"{'delay p50':>9} {'delay p90':>9} {'polls/import':>12} {'handoff':>9} "
        f"{'failed':>6} {'real s':>7}"
    )
    with placement:
        for duration in durations:
            began = time.perf_counter()
            fig = anyio.run(run_one, duration, args.consents, args.seed, backend="asyncio")
            print(report(fig, time.perf_counter() - began), flush=True)


if __name__ == "__main__":
    main()
