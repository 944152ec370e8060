"""Whether the database takes writes, as the last write found out, for status and logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from aisd.clock import iso

__all__ = ["StorageHealth"]

log = structlog.get_logger("aisd.store")

# While the database stays unavailable, every failed write would log again: one line per
# this many seconds says it is still so, with how many failures it stands for.
REPEAT_LOG_SECONDS = 60.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StorageHealth:
    """The storage's state as the writes see it: ``ok``, or failing since a time for a reason.

    Logs ``store.unavailable`` (a warning: ``journalctl -p warning`` shows it) when writes
    start failing, then at most once per :data:`REPEAT_LOG_SECONDS` while they keep failing,
    and ``store.recovered`` once a write succeeds again.

    Args:
        now: the wall clock, for ``since``.
        monotonic: the clock that spaces repeated log lines.
    """

    def __init__(
        self,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self._monotonic = monotonic
        self.error: str | None = None
        self.since: datetime | None = None
        self._logged_at = 0.0
        self._unlogged = 0

    @property
    def ok(self) -> bool:
        """Whether the last write succeeded (or none failed yet)."""
        return self.error is None

    def failed(self, reason: str) -> None:
        """A write failed because the storage is unavailable for ``reason``."""
        now = self._monotonic()
        if self.error is None:
            self.error, self.since = reason, self._now()
            self._unlogged = 0
        elif now - self._logged_at < REPEAT_LOG_SECONDS and reason == self.error:
            self._unlogged += 1
            return
        self.error = reason
        log.warning(
            "store.unavailable",
            reason=reason,
            since=iso(self.since) if self.since else None,
            repeats=self._unlogged,
        )
        self._logged_at = now
        self._unlogged = 0

    def succeeded(self) -> None:
        """A write succeeded: the storage is available (again)."""
        if self.error is None:
            return
        log.warning(
            "store.recovered", reason=self.error, since=iso(self.since) if self.since else None
        )
        self.error, self.since = None, None

    def as_json(self) -> dict[str, Any]:
        """The ``storage`` member of ``daemon.status``."""
        return {
            "ok": self.ok,
            "error": self.error,
            "since": iso(self.since) if self.since else None,
        }
