"""Optional Kontomatik analytics, fetched after each successful import (``AISD_ANALYTICS``).

It follows the event feed rather than the pipeline: an import's slot is never held for an
analytics call, and a failure here never touches the import, which already succeeded. A crash
between the import and the fetch leaves the previous scores in place until the next import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import anyio
import structlog
from anyio.abc import TaskStatus

from aisd.clock import Clock
from aisd.kontomatik import KontomatikClient, KontomatikError
from aisd.store import EventRecord, ImportQuery, StaleLeader, Store

log = structlog.get_logger("aisd.analytics")

# Imports waiting for their analytics; beyond this, the oldest wait for the next import.
BACKLOG = 1000


class Analytics:
    """Fetches and keeps the configured analytics of owners whose import just succeeded.

    Args:
        store: where the scores are kept.
        client: the Kontomatik API.
        clock: the time the scores are stamped with.
        kinds: the analytics configured (``AISD_ANALYTICS``).
        duty: the context each fetch runs in (the leader's term, which fences its write:
            :meth:`aisd.cluster.Leadership.duty`).
    """

    def __init__(
        self,
        store: Store,
        client: KontomatikClient,
        clock: Clock,
        kinds: frozenset[str],
        duty: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self._duty = duty
        self._store = store
        self._client = client
        self._clock = clock
        self._kinds = kinds
        self._send, self._receive = anyio.create_memory_object_stream[EventRecord](BACKLOG)

    def observe(self, event: EventRecord) -> None:
        """An event of the feed; ``import.succeeded`` ones queue a fetch."""
        if event.type != "import.succeeded" or not event.owner_external_id or not self._kinds:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            log.warning("analytics.backlog_full", importId=event.import_id)
        except anyio.ClosedResourceError:
            pass  # shutting down: the next import fetches them

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fetch, one owner at a time, until cancelled."""
        task_status.started()
        async with self._send, self._receive:
            async for event in self._receive:
                try:
                    with self._duty():
                        await self._fetch(event)
                except StaleLeader:
                    # Deposed while fetching: nothing was kept; the scores wait for the next
                    # import, as after a crash.
                    log.info("analytics.fenced", ownerExternalId=event.owner_external_id)

    async def _fetch(self, event: EventRecord) -> None:
        owner = event.owner_external_id
        assert owner is not None
        if "scores" not in self._kinds:
            return
        # Kontomatik knows the owner by the id it echoed (kontomatik-<uuid> when the widget
        # was given none), which need not be aisd's own.
        upstream = owner
        if event.import_id is not None:
            found = await self._store.imports(ImportQuery(import_id=event.import_id))
            upstream = (found[0].owner_echo if found else None) or owner
        try:
            scores = await self._client.owner_scores(upstream)
        except KontomatikError as exc:
            log.warning("analytics.failed", ownerExternalId=owner, error=exc.name)
            return
        # NaN and infinities have no JSON form; a score that is not a number is not kept.
        kept = [s for s in scores if s.score is None or math.isfinite(s.score)]
        await self._store.save_owner_scores(
            owner, kept, import_id=event.import_id, now=self._clock.now()
        )
        log.info("analytics.stored", ownerExternalId=owner, models=len(kept))
