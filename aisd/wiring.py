"""The daemon's parts wired once, for ``aisd run``, ``aisd simulate`` and the tests.

:func:`open_core` opens the store and the upstream client (the real API, or a sandbox in this
process behind an ASGI transport) and builds the refresher, the pipeline and the services the
socket's methods use. Callers differ only in what they pass in: the clock (real or virtual),
the :class:`Hooks` the parts call when something happens, and a wrapper around the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aisd.clock import Clock, iso
from aisd.cluster import LEASE_SECONDS
from aisd.kontomatik import KontomatikClient
from aisd.pipeline import Pipeline, PipelineConfig
from aisd.refresh import Refresher
from aisd.rpc import Handler
from aisd.rpc.methods import Services, core_methods, merged, sandbox_methods, token_methods
from aisd.rpc.methods_data import data_methods
from aisd.sandbox import DEFAULT_API_KEY, InProcessTransport, Sandbox, SandboxApp, SandboxConfig
from aisd.settings import Settings
from aisd.store import StorageHealth, Store, open_configured_store, open_store

if TYPE_CHECKING:
    from aisd.store.postgresql import PostgresStore

__all__ = ["Core", "Hooks", "build", "embedded_sandbox", "open_core", "upstream_client"]

SANDBOX_URL = "http://sandbox.invalid"


def _nothing() -> None:
    pass


@dataclass(slots=True)
class Hooks:
    """What the parts call when something happens; set them before the parts run (the
    daemon's event log, for one, is built on the store :func:`open_core` opened).

    Attributes:
        on_change: an import moved on (its events may be in the feed).
        on_queued: the refresher queued refreshes (the pipeline is woken anyway).
        on_consent: a new consent was stored (the pipeline is woken anyway).
        on_token: a new consent stored a token (after ``on_consent``): a consent without one
            gives the planner nothing to plan.
        on_command_end: a command ended upstream (seconds it ran, when it was last seen
            running, the duration expected), for the metrics.
        cluster_status: ``daemon.status``'s ``cluster`` (the daemons sharing a PostgreSQL
            database; None on SQLite).
    """

    on_change: Callable[[], None] = _nothing
    on_queued: Callable[[], None] = _nothing
    on_consent: Callable[[], None] = _nothing
    on_token: Callable[[], None] = _nothing
    on_command_end: Callable[[float, float | None, float | None], None] = (
        lambda finished, running, expected: None
    )
    cluster_status: Callable[[], dict[str, Any] | None] = lambda: None


@dataclass(frozen=True, slots=True)
class Core:
    """The wired parts.

    Attributes:
        settings: the configuration they were built from.
        clock: the clock they all read.
        store: the store (wrapped as the caller asked).
        client: the upstream client.
        refresher: the planner's shell and the quota gate.
        pipeline: the import pipeline, gated by ``refresher``.
        services: what the socket's methods need.
        health: the store's health, as ``daemon.status`` and the metrics report it.
        sandbox: the in-process sandbox upstream, if that is what ``client`` speaks to.
        shared: the store as a database other daemons may share (PostgreSQL), else None.
    """

    settings: Settings
    clock: Clock
    store: Store
    client: KontomatikClient
    refresher: Refresher
    pipeline: Pipeline
    services: Services
    health: StorageHealth
    sandbox: Sandbox | None = field(default=None)
    shared: PostgresStore | None = field(default=None)

    def handlers(self, *more: Mapping[str, Handler]) -> dict[str, Handler]:
        """The socket's method table (the sandbox's only with a sandbox), with ``more``."""
        return merged(
            core_methods(self.services),
            token_methods(self.store, self.refresher),
            data_methods(
                self.store,
                self.refresher,
                self.clock,
                refreshes_per_day=self.settings.refreshes_per_day,
            ),
            sandbox_methods(self.sandbox) if self.sandbox else {},
            *more,
        )


def embedded_sandbox(
    settings: Settings, clock: Clock | None = None, *, state_path: Path | None = None
) -> Sandbox:
    """The sandbox ``aisd run --sandbox`` serves upstream, keyed by the configured API key (or
    the sandbox's default), issuing tokens valid ``settings.access_days``, on ``clock`` (the
    wall clock by default), keeping its state in ``state_path`` when given."""
    key = settings.api_key.get_secret_value() if settings.api_key else DEFAULT_API_KEY
    config = SandboxConfig(api_key=key, token_days=settings.access_days)
    if clock is None:
        return Sandbox(config, state_path=state_path)
    return Sandbox(config, clock=clock.now, state_path=state_path)


def upstream_client(settings: Settings, sandbox: Sandbox | None) -> KontomatikClient:
    """The upstream client: the real API, or ``sandbox`` in this process."""
    if sandbox is not None:
        return KontomatikClient(
            SANDBOX_URL,
            sandbox.config.api_key,
            transport=InProcessTransport(SandboxApp(sandbox)),
            timeout=settings.http_timeout_seconds,
            max_reply_bytes=settings.max_reply_bytes,
        )
    assert settings.api_key is not None, "settings require the API key outside --sandbox"
    return KontomatikClient(
        str(settings.api_url),
        settings.api_key.get_secret_value(),
        timeout=settings.http_timeout_seconds,
        max_reply_bytes=settings.max_reply_bytes,
    )


def build(
    settings: Settings,
    store: Store,
    client: KontomatikClient,
    clock: Clock,
    *,
    health: StorageHealth,
    hooks: Hooks,
    sandbox: Sandbox | None = None,
    pipeline_config: PipelineConfig | None = None,
) -> Core:
    """Build the refresher, the pipeline and the services on an open store and client
    (``health``: the store's, as ``daemon.status`` reports it)."""

    def queued() -> None:
        pipeline.wake()
        hooks.on_queued()

    def consent_arrived() -> None:
        pipeline.work_queued()
        hooks.on_consent()

    def status_extra() -> dict[str, Any]:
        return {
            "runningCommands": pipeline.running_commands,
            "slotLimit": pipeline.limit,
            "sandbox": sandbox is not None,
            "storage": health.as_json(),
            "cluster": hooks.cluster_status(),
        }

    refresher = Refresher.from_settings(store, client, clock, settings, wake_pipeline=queued)
    pipeline = Pipeline(
        store,
        client,
        pipeline_config or PipelineConfig.from_settings(settings),
        clock,
        gate=refresher,
        on_change=lambda: hooks.on_change(),
        on_command_end=lambda *ended: hooks.on_command_end(*ended),
    )
    services = Services(
        store=store,
        clock=clock,
        history_days=settings.first_import_history_days,
        access_days=settings.access_days,
        wake_pipeline=consent_arrived,
        token_created=lambda: hooks.on_token(),
        status_extra=status_extra,
        started_at=iso(clock.now()),
    )
    return Core(settings, clock, store, client, refresher, pipeline, services, health, sandbox)


@asynccontextmanager
async def open_core(
    settings: Settings,
    *,
    clock: Clock,
    sandbox: Sandbox | None = None,
    db_path: Path | None = None,
    hooks: Hooks | None = None,
    wrap_store: Callable[[Store], Store] | None = None,
    pipeline_config: PipelineConfig | None = None,
    scratch_db: bool = False,
) -> AsyncIterator[Core]:
    """Open the store (SQLite at ``db_path``; else the configured one: PostgreSQL with
    ``AISD_DATABASE_URL``, SQLite at ``settings.db_path`` without) and the upstream client,
    wire the parts on them, and close both on exit.

    Args:
        settings: the configuration.
        clock: the clock every part reads.
        sandbox: speak to this in-process sandbox instead of the real API.
        db_path: the database, when not the configured one.
        hooks: what the parts call when something happens (may be filled in later).
        wrap_store: wraps the opened store before any part sees it.
        pipeline_config: the pipeline's knobs, when not the settings'.
        scratch_db: the database is a throwaway this event loop alone uses (``aisd simulate``);
            see :func:`aisd.store.open_store`.
    """
    async with AsyncExitStack() as stack:
        opened: Store
        shared: PostgresStore | None = None
        if db_path is None and settings.database_url is not None:
            opened = await stack.enter_async_context(open_configured_store(settings))
            shared = cast("PostgresStore", opened)
        else:
            opened = await stack.enter_async_context(
                open_store(db_path or settings.db_path, scratch=scratch_db)
            )
        if shared is not None and pipeline_config is None:
            # Other daemons share the database: their leases are theirs to end, and a dead
            # daemon's imports move on within a short lease.
            pipeline_config = replace(
                PipelineConfig.from_settings(settings),
                sole_claimer=False,
                lease_seconds=LEASE_SECONDS,
            )
        store: Store = opened if wrap_store is None else wrap_store(opened)
        client = await stack.enter_async_context(upstream_client(settings, sandbox))
        core = build(
            settings,
            store,
            client,
            clock,
            health=opened.health,
            hooks=hooks or Hooks(),
            sandbox=sandbox,
            pipeline_config=pipeline_config,
        )
        yield replace(core, shared=shared)
