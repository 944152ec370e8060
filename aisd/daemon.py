"""``aisd run``: the daemon's root task and its lifecycle.

One anyio task group holds everything: the socket server, the import pipeline, the planner
(woken by APScheduler), the event log and the watchdog. ``READY=1`` goes to systemd only once
the database is open and migrated, the socket listens and the planner runs. SIGTERM or SIGINT
stops new work, keeps in-flight command ids in the database for the next start, and exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import structlog
from anyio import CancelScope
from anyio.abc import TaskStatus
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aisd import __version__, systemd
from aisd.analytics import Analytics
from aisd.clock import Clock, SystemClock
from aisd.cluster import Leadership
from aisd.housekeeping import housekeep
from aisd.instance import InstanceLocked, instance_lock
from aisd.logs import event_level, log_lines
from aisd.metrics import Metrics
from aisd.operations import Operations
from aisd.pipeline import Pipeline
from aisd.refresh import Refresher
from aisd.rpc import ListenError, RpcServer, open_listener
from aisd.rpc.catalog import CATALOG, COMMON_ERRORS
from aisd.settings import Settings
from aisd.store import EventRecord, StaleLeader, StorageUnavailable, Store
from aisd.wiring import Hooks, embedded_sandbox, open_core

log = structlog.get_logger("aisd.daemon")

# The event log reads the feed at least this often even when nothing woke it.
EVENT_LOG_RECHECK_SECONDS = 2.0
HOUSEKEEPING_FIRST_DELAY_SECONDS = 60.0
HOUSEKEEPING_INTERVAL_SECONDS = 3600.0
# The least time between two planner ticks (see _planner).
_TICK_GAP_SECONDS = 0.25


@dataclass(slots=True)
class Health:
    """Liveness facts the watchdog checks before each ping."""

    last_tick: float = field(default_factory=time.monotonic)


class Ticks:
    """Requests for a planner tick: a one-slot stream, so requests made while one is pending
    coalesce into it."""

    def __init__(self) -> None:
        self._send, self.receive = anyio.create_memory_object_stream[None](1)

    def poke(self) -> None:
        """Ask for a tick soon."""
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._send.send_nowait(None)

    def close(self) -> None:
        """No more ticks (the planner is stopping)."""
        self._send.close()


class EventLog:
    """Writes one JSON log line per event of the durable feed and hands each event to the
    observers (which must not block).

    On a database several daemons share, every daemon follows the whole feed: each logs the
    events it appended itself (``origin``), after their commit, so that each line appears
    once in the cluster and in the log of the host where it happened; the leader alone
    observes every event (analytics, metrics, webhooks: once per cluster) and logs those no
    daemon names (appended by a tool, not a daemon).

    Args:
        store: the store whose feed is followed.
        observers: told of each event, on the leading daemon.
        leading: whether this daemon leads now (always, by default: one daemon, one database).
        origin: this daemon's name in the events' ``origin``; None when no event names one.
    """

    def __init__(
        self,
        store: Store,
        observers: Sequence[Callable[[EventRecord], None]] = (),
        leading: Callable[[], bool] = lambda: True,
        origin: str | None = None,
    ) -> None:
        self._store = store
        self._leading = leading
        self._origin = origin
        self._observers = tuple(observers)
        self._wake = anyio.Event()

    def wake(self) -> None:
        """New events may have been appended."""
        self._wake.set()

    def _logs(self, event: EventRecord, leading: bool) -> bool:
        if event.origin is None:
            return leading
        return event.origin == self._origin

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed from its current end until cancelled."""
        after = (await self._store.events(after=0, limit=0)).head
        task_status.started()
        while True:
            with anyio.move_on_after(EVENT_LOG_RECHECK_SECONDS):
                await self._wake.wait()
            self._wake = anyio.Event()
            while True:
                try:
                    events = (await self._store.events(after=after, limit=500)).events
                except StorageUnavailable:
                    break  # the store logs it; the next wake-up reads on from `after`
                # A page's lines are written together: one write and flush, not one per event.
                lines = []
                for event in events:
                    leading = self._leading()
                    if self._logs(event, leading):
                        fields = {
                            "eventId": event.id,
                            "ownerExternalId": event.owner_external_id,
                            "tokenId": event.token_id,
                            "importId": event.import_id,
                            **event.data,
                        }
                        lines.append((event_level(event.type, event.data), event.type, fields))
                    if leading:
                        for observe in self._observers:
                            observe(event)
                    after = event.id
                log_lines("aisd.events", lines)
                if len(events) < 500:
                    break


def main(settings: Settings, *, sandbox: bool) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit code."""
    try:
        with instance_lock(settings.db_path):
            anyio.run(run, settings, sandbox, backend="asyncio")
    except InstanceLocked as exc:
        log.error("daemon.locked", message=str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    except (OSError, ListenError, StorageUnavailable) as exc:
        # Paths, OS messages and SQLSTATEs only: nothing here carries a secret. (A PostgreSQL
        # server unreachable at start: systemd's Restart= tries again.)
        log.error("daemon.failed", error=type(exc).__name__, message=str(exc))
        return 1
    return 0


async def run(settings: Settings, sandbox: bool, clock: Clock | None = None) -> None:
    """The root task: open everything, serve, and tear down in order."""
    clock = clock or SystemClock()
    health = Health()
    hooks = Hooks()
    # The embedded sandbox keeps its state beside the database, so that a restarted `make run`
    # meets the sandbox its tokens and sessions came from (and a fresh database a fresh one).
    state = Path(f"{settings.db_path}.sandbox.json")
    box = embedded_sandbox(settings, state_path=state) if sandbox else None
    async with AsyncExitStack() as stack:
        core = await stack.enter_async_context(
            open_core(settings, clock=clock, sandbox=box, hooks=hooks)
        )
        store, pipeline, refresher = core.store, core.pipeline, core.refresher
        # On a database other daemons share (PostgreSQL), once-per-cluster duties need a lease.
        leadership = Leadership(core.shared, clock)
        hooks.cluster_status = leadership.status
        ops = Operations.from_settings(
            settings, store, clock, leading=leadership.leading, duty=leadership.duty
        )
        core.client.observer = ops.metrics.upstream_call
        hooks.on_command_end = ops.metrics.command_ended
        ops.attach(
            running_commands=lambda: pipeline.running_commands,
            slot_limit=lambda: pipeline.limit,
            storage_ok=lambda: core.health.ok,
        )
        analytics = Analytics(store, core.client, clock, settings.analytics, leadership.duty)
        # Each daemon logs the events it appended; the leader alone fetches their analytics,
        # counts them for its metrics and delivers them to webhooks.
        events = EventLog(
            store,
            observers=[analytics.observe, *ops.observers()],
            leading=leadership.leading,
            origin=None if core.shared is None else core.shared.origin,
        )
        ticks = Ticks()
        hooks.on_change = hooks.on_queued = events.wake

        def work_appeared() -> None:
            pipeline.wake()
            events.wake()

        hooks.on_consent = events.wake
        # A new token is planned at once rather than at the next periodic tick; a burst of
        # consents without one would only run ticks back to back that find nothing new.
        hooks.on_token = ticks.poke
        listener, activated = await open_listener(str(settings.socket_path), settings.socket_mode)
        stack.push_async_callback(listener.aclose)
        server = RpcServer(
            core.handlers(ops.methods()),
            allowed_uids=frozenset(settings.allowed_uids),
            allowed_gids=frozenset(settings.allowed_gids),
            idle_timeout=settings.socket_idle_timeout_seconds,
            max_connections=settings.socket_max_connections,
            catalog=CATALOG,
            common_errors=COMMON_ERRORS,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_handle_signals, tg.cancel_scope, pipeline)
            await tg.start(leadership.run)
            if core.shared is not None:
                # Work committed on another host wakes this one at once (polling stays).
                await tg.start(core.shared.listen, work_appeared)
            await tg.start(events.run)
            await tg.start(analytics.run)
            await ops.start(tg)
            await tg.start(server.serve, listener)
            await tg.start(pipeline.run)
            await tg.start(
                _planner,
                refresher,
                store,
                pipeline,
                health,
                settings,
                events,
                ticks,
                ops.metrics,
                leadership,
            )
            tg.start_soon(_watchdog, store, health, pipeline, settings.planner_tick_seconds)
            tg.start_soon(_housekeeping, store, clock, settings, leadership)
            systemd.notify(f"READY=1\nSTATUS=serving, version {__version__}")
            log.info(
                "daemon.ready",
                version=__version__,
                sandbox=sandbox,
                socketActivated=activated,
                maxRunningCommands=settings.max_running_commands,
            )
    log.info("daemon.stopped")


async def _handle_signals(scope: CancelScope, pipeline: Pipeline) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            systemd.notify("STOPPING=1")
            log.info("daemon.stopping", signal=signal.Signals(signum).name)
            pipeline.stop_accepting()
            scope.cancel()
            return


async def _planner(
    refresher: Refresher,
    store: Store,
    pipeline: Pipeline,
    health: Health,
    settings: Settings,
    events: EventLog,
    ticks: Ticks,
    metrics: Metrics,
    leadership: Leadership,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run planner ticks when APScheduler (or a new consent) says so; the scheduler holds no
    state of its own.

    APScheduler 3 runs jobs outside anyio's task tree, so its job only drops a token into a
    one-slot stream (a full stream coalesces ticks) and this task does the work.
    """
    receive = ticks.receive

    async def poke() -> None:
        ticks.poke()

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        poke,
        IntervalTrigger(seconds=settings.planner_tick_seconds, jitter=1),
        id="planner-tick",
        next_run_time=datetime.now(UTC),
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
        replace_existing=True,
    )
    scheduler.start()
    task_status.started()
    try:
        async with receive, anyio.create_task_group() as revocations:
            async for _ in receive:
                if not leadership.leading():
                    # Another daemon plans, expires, warns and revokes; this one stays alive.
                    health.last_tick = time.monotonic()
                    continue
                try:
                    # A duty of the term held now: deposed half-way (frozen, then taken
                    # over), the tick and its revocations write nothing.
                    with leadership.duty():
                        began = time.monotonic()
                        report = await refresher.tick()
                        metrics.planner_ticked(time.monotonic() - began)
                        status = await store.status(now=datetime.now(UTC))
                        if report.ending:
                            # Upstream calls: off the tick, so a slow API never stalls it.
                            revocations.start_soon(_end_by_limit, refresher, report.ending)
                except StaleLeader:
                    log.info("cluster.duty_fenced", duty="planner")
                    health.last_tick = time.monotonic()
                    continue
                except StorageUnavailable:
                    # Alive, not wedged (a restart would not free the disk): the store logs
                    # it, rate-limited, and the next tick tries again.
                    health.last_tick = time.monotonic()
                    continue
                except Exception:
                    log.exception("planner.tick_failed")
                    continue
                health.last_tick = time.monotonic()
                events.wake()
                tokens, imports = status.tokens, status.imports
                systemd.notify(
                    f"STATUS=tokens active={tokens.get('active', 0)}, "
                    f"running={pipeline.running_commands}, queued={imports.get('queued', 0)}"
                )
                if report.next_due_at is not None:
                    # Wake exactly when the next token falls due, not only at the next tick.
                    scheduler.add_job(
                        poke,
                        DateTrigger(run_date=max(report.next_due_at, datetime.now(UTC))),
                        id="planner-wake",
                        misfire_grace_time=None,
                        replace_existing=True,
                    )
                # A burst of consents pokes a tick per intake batch; waiting a moment lets the
                # next tick plan all the tokens that arrived meanwhile at once (10,000 minted
                # consents from 50 clients: 105 ticks -> 18, 12 % more consents/s, 16 % less
                # CPU a consent). A new token's first plan is at most this much later.
                await anyio.sleep(_TICK_GAP_SECONDS)
    finally:
        scheduler.shutdown(wait=False)
        ticks.close()


async def _end_by_limit(refresher: Refresher, ending: Sequence[tuple[str, str]]) -> None:
    """Cost-limit revocations, started inside the tick's duty and fenced by its term."""
    try:
        await refresher.end_by_limit(ending)
    except StaleLeader:
        # The ledger row of a revocation is written before its request: none was sent.
        log.info("cluster.duty_fenced", duty="cost_limit_revocations")


async def _housekeeping(
    store: Store, clock: Clock, settings: Settings, leadership: Leadership
) -> None:
    """Retention: purge old transactions and raw replies shortly after start, then hourly (on
    the leading daemon only)."""
    await anyio.sleep(HOUSEKEEPING_FIRST_DELAY_SECONDS)
    while True:
        if not leadership.leading():
            await anyio.sleep(HOUSEKEEPING_FIRST_DELAY_SECONDS)
            continue
        try:
            with leadership.duty():
                await housekeep(
                    store,
                    now=clock.now(),
                    retention_days=settings.retention_days,
                    raw_retention_days=settings.raw_retention_days,
                )
        except StaleLeader:
            log.info("cluster.duty_fenced", duty="housekeeping")
        except Exception:
            log.exception("housekeeping.failed")
        await anyio.sleep(HOUSEKEEPING_INTERVAL_SECONDS)


async def _watchdog(store: Store, health: Health, pipeline: Pipeline, tick_seconds: float) -> None:
    """Ping systemd's watchdog only while the database answers, the planner ticks and the
    dispatcher loops: a wedged daemon stops pinging and systemd restarts it."""
    interval = systemd.watchdog_interval()
    if interval is None:
        return
    while True:
        await anyio.sleep(interval)
        since_tick = time.monotonic() - health.last_tick
        if since_tick > 3 * tick_seconds + interval:
            log.error("watchdog.skipped", reason="planner", staleSeconds=round(since_tick, 1))
            continue
        try:
            with anyio.fail_after(interval):
                await store.ping()
        except Exception as exc:
            log.error("watchdog.skipped", reason="database", error=type(exc).__name__)
            continue
        stale = time.monotonic() - pipeline.last_dispatch_at
        if stale > max(3 * interval, 10.0):
            log.error("watchdog.skipped", reason="dispatcher", staleSeconds=round(stale, 1))
            continue
        systemd.notify("WATCHDOG=1")
