"""Time, behind one seam: the daemon reads the wall clock here and nowhere else.

The store and the pure functions take ``now`` as a parameter; the shell asks a :class:`Clock`.
A test or ``aisd simulate`` swaps in a clock of its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import anyio


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
    """ISO 8601 UTC with a ``Z``, as the CONTRACT writes times (``2026-11-28T10:00:00Z``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
