"""Prometheus metrics of the running daemon (``AISD_METRICS_LISTEN``), made with prometheus_client.

Two kinds of values. Gauges are read at each scrape from the store and the running pipeline, so a
scrape agrees with ``daemon.status`` at that moment and survives restarts. Counters and histograms
are counted in this process from hooks (upstream calls, the pipeline's final polls, planner
ticks) and from the event feed; like every Prometheus counter they start at zero with the
process, which ``rate()`` and ``increase()`` handle. No label carries an owner, a token, an IBAN
or a URL's credentials: labels are kinds, states, endpoint names, outcomes and event types.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from aisd import __version__
from aisd.clock import Clock
from aisd.store import EventRecord, ImportKind, ImportQuery, ImportState, Store, TokenState

__all__ = ["CONTENT_TYPE", "EXPIRING_WITHIN", "STALE_AFTER", "Metrics", "Runtime", "end_poll_delay"]

log = structlog.get_logger("aisd.metrics")

# The 0.0.4 text format: what every Prometheus server and promtool parse.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXPIRING_WITHIN = timedelta(days=7)
STALE_AFTER = timedelta(days=1)
UPSTREAM_ENDPOINTS = (
    "default_import",
    "import_result",
    "reuse_multiple_access",
    "revoke_multiple_access",
    "owner_scores",
)
# Upstream refusals an operator alerts on: their series exist (at 0) from the start, so
# increase() sees the first one.
UPSTREAM_LIMIT_ERRORS = (
    "JobsQuotaExceeded",
    "MultipleAccessLimitExceeded",
    "InvalidMultipleAccessId",
)
EVENT_TYPES = (
    "consent.received",
    "import.started",
    "import.succeeded",
    "import.failed",
    "token.expiring",
    "token.expired",
    "token.reauth_required",
    "token.revoked",
    "token.refresh_paused",
    "quota.deferred",
    "owner.forgotten",
)
QUOTA_REASONS = ("quota", "upstream_limit")
_ERROR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_FINAL = {"import.succeeded": ImportState.SUCCESSFUL, "import.failed": ImportState.FAILED}

# The _created series double every counter for little use; the process start time is exported.
disable_created_metrics()  # type: ignore[no-untyped-call]


def end_poll_delay(finished_at: float, running_at: float | None, expected: float | None) -> float:
    """The delay from a command's end upstream to the poll that found it ended, estimated.

    The command ended between the last poll that saw it running (``running_at``, seconds after
    the Default Import; None: none did) and the final poll (``finished_at``). The learned
    duration ``expected``, clamped into that bracket, is the estimate of the end; without one,
    the bracket's start is, which gives the largest possible delay.
    """
    lower = 0.0 if running_at is None else running_at
    end = lower if expected is None else min(max(expected, lower), finished_at)
    return max(0.0, finished_at - end)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a scrape reads from the running daemon besides the store."""

    running_commands: Callable[[], int]
    slot_limit: Callable[[], int]
    storage_ok: Callable[[], bool]
    webhook_lags: Callable[[], Awaitable[list[tuple[str, int, float]]]] | None = None


class Metrics:
    """Every metric of the daemon, in a registry of its own.

    Args:
        store: the database, read at each scrape and for the kind of each finished import.
        clock: the wall clock of the scrape's time windows.
        max_running_commands: ``AISD_MAX_RUNNING_COMMANDS``.
    """

    def __init__(self, store: Store, clock: Clock, *, max_running_commands: int) -> None:
        self._store = store
        self._clock = clock
        self._runtime: Runtime | None = None
        # Finished imports whose kind is still to be looked up (observe() must not await).
        self._finished: deque[EventRecord] = deque()
        self._finished_added = anyio.Event()
        r = self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds...
        ProcessCollector(registry=r)
        Info("aisd_build", "The running aisd.", registry=r).info(
            {"version": __version__, "python": sys.version.split()[0]}
        )
        self.imports_finished = Counter(
            "aisd_imports_finished",
            "Imports that ended since start, by kind and final state.",
            ["kind", "state"],
            registry=r,
        )
        self.import_duration = Histogram(
            "aisd_import_duration_seconds",
            "Time from an import's first upstream call to its stored result, by kind.",
            ["kind"],
            buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.upstream_requests = Counter(
            "aisd_upstream_requests",
            "Kontomatik API calls since start, by endpoint and outcome (ok or the error name).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "aisd_upstream_request_duration_seconds",
            "Duration of Kontomatik API calls, by endpoint.",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.end_poll_delay = Histogram(
            "aisd_command_end_poll_delay_seconds",
            "Estimated delay from a command's end upstream to the poll that found it ended.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=r,
        )
        self.planner_tick = Histogram(
            "aisd_planner_tick_duration_seconds",
            "Duration of one refresh-planner tick.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.events = Counter(
            "aisd_events",
            "Events appended to the feed since start, by type.",
            ["type"],
            registry=r,
        )
        self.quota_deferrals = Counter(
            "aisd_quota_deferrals",
            "Refreshes deferred since start: the rolling quota is full (quota) or upstream "
            "refused (upstream_limit).",
            ["reason"],
            registry=r,
        )
        self.running_commands = Gauge(
            "aisd_running_commands", "Kontomatik commands holding a slot now.", registry=r
        )
        self.slot_limit = Gauge(
            "aisd_running_commands_limit",
            "The current slot budget (below the maximum while upstream pushes back).",
            registry=r,
        )
        Gauge(
            "aisd_running_commands_max",
            "AISD_MAX_RUNNING_COMMANDS: the most commands run at once.",
            registry=r,
        ).set(max_running_commands)
        self.queue_depth = Gauge(
            "aisd_import_queue_depth", "Imports queued, by kind.", ["kind"], registry=r
        )
        self.tokens = Gauge("aisd_tokens", "Tokens by state.", ["state"], registry=r)
        self.tokens_expiring = Gauge(
            "aisd_tokens_expiring_soon",
            "Active tokens whose access ends within 7 days.",
            registry=r,
        )
        self.tokens_stale = Gauge(
            "aisd_tokens_stale",
            "Active tokens without a successful import in the last 24 hours.",
            registry=r,
        )
        self.failed_last_hour = Gauge(
            "aisd_imports_failed_last_hour",
            "Imports that failed in the last hour (daemon.status failedLastHour).",
            registry=r,
        )
        self.last_success = Gauge(
            "aisd_last_import_success_timestamp_seconds",
            "When the newest successful import (within 30 days) ended; 0 without one.",
            registry=r,
        )
        self.storage_up = Gauge(
            "aisd_storage_up",
            "1 while the database takes writes, 0 while it refuses them.",
            registry=r,
        )
        self.feed_head = Gauge(
            "aisd_event_feed_head", "The newest event id of the feed.", registry=r
        )
        self.webhook_lag_events = Gauge(
            "aisd_webhook_lag_events",
            "Events an endpoint has still to receive.",
            ["endpoint"],
            registry=r,
        )
        self.webhook_lag = Gauge(
            "aisd_webhook_lag_seconds",
            "How long the oldest event an endpoint has still to receive has waited.",
            ["endpoint"],
            registry=r,
        )
        self._initialise_series()

    def _initialise_series(self) -> None:
        for kind in ImportKind:
            self.queue_depth.labels(kind.value)
            self.import_duration.labels(kind.value)
            for state in _FINAL.values():
                self.imports_finished.labels(kind.value, state.value)
        for endpoint in UPSTREAM_ENDPOINTS:
            self.upstream_duration.labels(endpoint)
            for outcome in ("ok", *UPSTREAM_LIMIT_ERRORS):
                self.upstream_requests.labels(endpoint, outcome)
        for event_type in EVENT_TYPES:
            self.events.labels(event_type)
        for reason in QUOTA_REASONS:
            self.quota_deferrals.labels(reason)
        for token_state in TokenState:
            self.tokens.labels(token_state.value)

    def attach(self, runtime: Runtime) -> None:
        """Give the scrape the running daemon's live values."""
        self._runtime = runtime

    # -- hooks (synchronous, never blocking) ---------------------------------------------------

    def upstream_call(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One Kontomatik API call ended (the client's observer)."""
        # Error names come from upstream: an odd one must not mint label values without end.
        if not _ERROR_NAME.fullmatch(outcome):
            outcome = "other"
        self.upstream_requests.labels(endpoint, outcome).inc()
        self.upstream_duration.labels(endpoint).observe(seconds)

    def command_ended(
        self, finished_at: float, running_at: float | None, expected: float | None
    ) -> None:
        """A final poll found a command ended (the pipeline's observer)."""
        self.end_poll_delay.observe(end_poll_delay(finished_at, running_at, expected))

    def planner_ticked(self, seconds: float) -> None:
        """One planner tick took ``seconds``."""
        self.planner_tick.observe(seconds)

    def observe(self, event: EventRecord) -> None:
        """An event of the feed (the event log's observer)."""
        self.events.labels(event.type).inc()
        if event.type == "quota.deferred":
            self.quota_deferrals.labels(str(event.data.get("reason", "quota"))).inc()
        elif event.type in _FINAL and event.import_id is not None:
            # The event does not say the import's kind: the store does, off this call.
            self._finished.append(event)
            self._finished_added.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Count finished imports by kind until cancelled."""
        task_status.started()
        while True:
            await self._finished_added.wait()
            self._finished_added = anyio.Event()
            while self._finished:
                event = self._finished.popleft()
                assert event.import_id is not None
                await self._count_finished(event, event.import_id)

    async def _count_finished(self, event: EventRecord, import_id: str) -> None:
        try:
            found = await self._store.imports(ImportQuery(import_id=import_id))
        except Exception:
            log.exception("metrics.lookup_failed")
            return
        # Forgotten meanwhile: the import is gone, and so is its kind.
        kind = found[0].kind.value if found else "unknown"
        self.imports_finished.labels(kind, _FINAL[event.type].value).inc()
        duration = event.data.get("durationSeconds")
        if event.type == "import.succeeded" and isinstance(duration, int | float):
            self.import_duration.labels(kind).observe(float(duration))

    # -- the scrape ----------------------------------------------------------------------------

    async def scrape(self) -> bytes:
        """Read the gauges afresh and render every metric in the text format."""
        store = self._store
        now = self._clock.now()
        ops = await store.status(now=now, expiring_within=EXPIRING_WITHIN, stale_after=STALE_AFTER)
        last_success, failed, head = ops.last_success_at, ops.failed_last_hour, ops.event_head
        for state, n in ops.tokens.items():
            self.tokens.labels(state).set(n)
        for kind in ImportKind:
            self.queue_depth.labels(kind.value).set(
                ops.open_imports.get((kind.value, ImportState.QUEUED.value), 0)
            )
        self.tokens_expiring.set(ops.tokens_expiring or 0)
        self.tokens_stale.set(ops.tokens_stale or 0)
        self.failed_last_hour.set(failed)
        self.last_success.set(0 if last_success is None else last_success.timestamp())
        self.feed_head.set(head)
        runtime = self._runtime
        if runtime is not None:
            self.running_commands.set(runtime.running_commands())
            self.slot_limit.set(runtime.slot_limit())
            self.storage_up.set(1 if runtime.storage_ok() else 0)
            if runtime.webhook_lags is not None:
                for endpoint, events, seconds in await runtime.webhook_lags():
                    self.webhook_lag_events.labels(endpoint).set(events)
                    self.webhook_lag.labels(endpoint).set(seconds)
        return generate_latest(self.registry)
