"""Time, behind one seam: the daemon reads the wall clock here and nowhere else.

The store and the pure functions take ``now`` as a parameter; the shell asks a :class:`Clock`.
A test or ``aisd simulate`` swaps in a clock of its own: :class:`VirtualClock` jumps over idle
time, so days of the real planner and pipeline pass in seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus


class Clock(Protocol):
    """Where the daemon gets the time and waits for it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps: spacing and durations are measured on it."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The wall clock (UTC) and anyio's sleep."""

    def now(self) -> datetime:
        """The current wall-clock time in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``: immune to wall-clock steps."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep in real time."""
        await anyio.sleep(max(0.0, seconds))


def iso(value: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, as docs/api.md writes times (``2026-11-28T10:00:00Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Sleeper:
    deadline: float
    woken: anyio.Event = field(default_factory=anyio.Event)
    gone: bool = False  # cancelled: its deadline no longer holds time back


class VirtualClock:
    """A clock whose time moves only when every task waits: then it jumps to the earliest
    deadline of a :meth:`sleep`.

    :meth:`run` is the driver; it must run in the same event loop (asyncio) as the sleepers.
    Work done off the event loop (a database thread) makes its awaiting task look blocked, so
    callers mark it with :meth:`external` and time never moves under it.

    Args:
        start: the time at virtual second zero (timezone-aware).
    """

    def __init__(self, start: datetime) -> None:
        self._start = start.astimezone(UTC)
        self._elapsed = 0.0
        # now() is asked far more often than time moves: kept, not recomputed per call.
        self._now = self._start
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._order = itertools.count()
        self._registered = anyio.Event()
        self._external = 0
        self._external_done = anyio.Event()

    def now(self) -> datetime:
        """``start`` plus the virtual seconds elapsed."""
        return self._now

    def monotonic(self) -> float:
        """Virtual seconds elapsed since ``start``."""
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` of virtual time have passed (a checkpoint when not positive)."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self._elapsed + seconds)
        heapq.heappush(self._heap, (sleeper.deadline, next(self._order), sleeper))
        self._registered.set()
        try:
            await sleeper.woken.wait()
        finally:
            sleeper.gone = True

    async def sleep_until(self, moment: datetime) -> None:
        """Wait until :meth:`now` reaches ``moment``."""
        await self.sleep((moment - self.now()).total_seconds())

    def alarm(self, moment: datetime, event: anyio.Event) -> Callable[[], None]:
        """Set ``event`` once :meth:`now` reaches ``moment`` (at once if it has), as a sleep
        until then would wake; a task waiting on ``event`` can so wait for time or for
        something else without a task of its own asleep. Returns a function that cancels
        the alarm."""
        deadline = self._elapsed + (moment - self.now()).total_seconds()
        if deadline <= self._elapsed:
            event.set()
            return _nothing
        sleeper = _Sleeper(deadline, event)
        heapq.heappush(self._heap, (deadline, next(self._order), sleeper))
        self._registered.set()

        def cancel() -> None:
            sleeper.gone = True

        return cancel

    @contextmanager
    def external(self) -> Iterator[None]:
        """Mark work in flight off the event loop: time does not move until it is done."""
        self._external += 1
        try:
            yield
        finally:
            self._external -= 1
            if self._external == 0:
                self._external_done.set()

    async def run(
        self,
        *,
        on_advance: Callable[[], None] = lambda: None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Drive time until cancelled: whenever everything waits, move to the earliest
        deadline, wake its sleepers (in the order they slept) and call ``on_advance``."""
        task_status.started()
        while True:
            await self._settle()
            while self._heap and self._heap[0][2].gone:
                heapq.heappop(self._heap)
            if not self._heap:
                self._registered = anyio.Event()
                await self._registered.wait()
                continue
            # Never past the earliest deadline, and never backwards.
            if self._heap[0][0] > self._elapsed:
                self._elapsed = self._heap[0][0]
                self._now = self._start + timedelta(seconds=self._elapsed)
            while self._heap and self._heap[0][0] <= self._elapsed:
                _, _, sleeper = heapq.heappop(self._heap)
                if not sleeper.gone:
                    sleeper.woken.set()
            on_advance()

    async def _settle(self) -> None:
        """Return once every other task has waited through two consecutive passes with
        nothing in flight off the loop."""
        quiet = 0
        # asyncio's queue of callbacks ready to run: empty, while this task runs, exactly when
        # no other task can run (a task waking up, or stepping on, is a callback in it). It is
        # asyncio's own, so another loop implementation is asked task by task instead.
        ready: Sized | None = getattr(asyncio.get_running_loop(), "_ready", None)
        while quiet < 2:
            # The clock runs on asyncio alone (see the class); anyio's checkpoint would ask
            # which event loop runs on every pass.
            await asyncio.sleep(0)
            if self._external:
                self._external_done = anyio.Event()
                await self._external_done.wait()
                quiet = 0
            elif len(ready) if ready is not None else _others_runnable():
                quiet = 0
            else:
                quiet += 1


def _nothing() -> None:
    pass


def _others_runnable() -> bool:
    """Whether a task other than the current one can run now.

    ``anyio.wait_all_tasks_blocked`` answers the same question but sleeps a real 0.1 s each
    time a task is still runnable, which would make a simulated month take hours.
    """
    this = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is this:
            continue
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return True
    return False
