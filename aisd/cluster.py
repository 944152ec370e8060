"""Once-per-cluster duties: which daemon leads the planner tick, expiry and warnings,
cost-limit revocations, housekeeping and analytics.

On SQLite one daemon owns the database and always leads. On PostgreSQL the daemons share a
leader lease row (database clock, a term bumped at every change of holder); the holder renews it
every third of its length. A leader trusts its lease only until a local monotonic deadline (the
start of its last successful renewal plus the lease, less a margin): a frozen or cut-off daemon
stops leading before the lease can have passed to another, and a resumed one finds the
deadline passed. A duty frozen after that check is fenced in the database: its transactions
check the term it started under (:meth:`Leadership.duty`) and a stale one writes nothing. Every
duty stays idempotent besides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus

from aisd.clock import Clock
from aisd.store import LeaderTerm, StorageUnavailable, under_term

__all__ = ["LEASE_SECONDS", "Leadership", "LeaseStore"]

log = structlog.get_logger("aisd.cluster")

# The leader lease and (for PostgreSQL) the import claimers' lease: a dead daemon's duties and
# imports move on within about this long.
LEASE_SECONDS = 6.0
_MARGIN_SECONDS = 1.0


class LeaseStore(Protocol):
    """What a shared-database store offers for leadership and the cluster's status; its
    ``origin`` names this daemon start (the leader lease's holder, the events' appender)."""

    origin: str

    async def take_leadership(self, holder: str, *, ttl_seconds: float) -> int | None: ...

    async def resign_leadership(self, holder: str) -> None: ...

    async def cluster(self) -> dict[str, Any]: ...


class Leadership:
    """Whether this daemon leads now, and the cluster as last seen (for ``daemon.status``).

    Args:
        store: the shared store, or None for a database only this daemon uses (always leads).
        clock: the monotonic clock of the local deadline and the renewal sleeps.
        lease_seconds: the lease's length.
    """

    def __init__(
        self, store: LeaseStore | None, clock: Clock, *, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._store = store
        self._clock = clock
        self._lease = lease_seconds
        # The store's name for this daemon start: its events carry the same.
        self.holder = store.origin if store is not None else "sole"
        self.term: int | None = None
        self._deadline = float("-inf")
        self.cluster: dict[str, Any] | None = None

    def leading(self) -> bool:
        """Whether once-per-cluster duties may run here now."""
        if self._store is None:
            return True
        return self._clock.monotonic() < self._deadline

    @contextmanager
    def duty(self) -> Iterator[None]:
        """Run the block (and the tasks it starts) as a duty of the term held now: the shared
        store refuses its writes with :class:`aisd.store.StaleLeader` once that term has
        lapsed or passed to another daemon, however long the duty was frozen in between."""
        if self._store is None:
            yield
            return
        # Outside a term (not leading) the duty fences on one no lease ever has.
        with under_term(LeaderTerm(self.holder, self.term if self.term is not None else 0)):
            yield

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take and renew the lease until cancelled; resign it on the way out."""
        if self._store is None:
            task_status.started()
            await anyio.sleep_forever()
        store = self._store
        assert store is not None
        try:
            # Started once the first attempt is made: a daemon alone leads from its start.
            await self._renew(store)
            task_status.started()
            while True:
                await self._clock.sleep(self._lease / 3)
                await self._renew(store)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await store.resign_leadership(self.holder)
                except Exception as exc:
                    # The lease lapses by itself; nothing to undo.
                    log.warning("cluster.resign_failed", error=type(exc).__name__)

    async def _renew(self, store: LeaseStore) -> None:
        started = self._clock.monotonic()
        try:
            term = await store.take_leadership(self.holder, ttl_seconds=self._lease)
            self.cluster = await store.cluster()
        except StorageUnavailable:
            return  # the deadline runs on; the duties stop when it passes
        if term is None:
            if self.term is not None:
                log.warning("cluster.leadership_lost", term=self.term)
            self.term, self._deadline = None, float("-inf")
            return
        if term != self.term:
            log.info("cluster.leading", term=term, holder=self.holder)
        self.term = term
        self._deadline = started + self._lease - min(_MARGIN_SECONDS, self._lease / 5)

    def status(self) -> dict[str, Any] | None:
        """The ``cluster`` member of ``daemon.status`` (None on a one-daemon database)."""
        if self._store is None:
            return None
        seen = self.cluster or {"daemons": [], "leader": None, "leaderTerm": None}
        return {"self": self.holder, "leading": self.leading(), **seen}
