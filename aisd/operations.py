"""What a daemon adds for its operators: webhook delivery and Prometheus metrics, built from the
settings in one place and started in the daemon's task group."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from anyio.abc import TaskGroup

from aisd.clock import Clock
from aisd.metrics import Metrics, Runtime
from aisd.metrics_server import serve_metrics
from aisd.rpc import Handler
from aisd.rpc.methods_ops import webhook_methods
from aisd.settings import Settings, parse_listen
from aisd.store import EventRecord, Store
from aisd.webhooks import Webhooks

__all__ = ["Operations"]


@dataclass(slots=True)
class Operations:
    """The metrics (always kept, served only with ``AISD_METRICS_LISTEN``) and the webhooks
    (with ``AISD_WEBHOOK_URL``) of one daemon."""

    metrics: Metrics
    webhooks: Webhooks | None
    listen: tuple[str, int] | None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        clock: Clock,
        *,
        leading: Callable[[], bool] = lambda: True,
        duty: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> Operations:
        """Build both from the settings; webhooks are delivered only while ``leading`` says so
        (on a database several daemons share, by the leader alone, each pass as a ``duty``
        of its term)."""
        webhooks = None
        if settings.webhook_url and settings.webhook_keys:
            webhooks = Webhooks(
                store,
                clock,
                urls=settings.webhook_url,
                keys=settings.webhook_keys,
                types=settings.webhook_events or None,
                retry_seconds=settings.webhook_retry_seconds,
                leading=leading,
                duty=duty,
            )
        listen = None if settings.metrics_listen is None else parse_listen(settings.metrics_listen)
        metrics = Metrics(store, clock, max_running_commands=settings.max_running_commands)
        return cls(metrics, webhooks, listen)

    def observers(self) -> list[Callable[[EventRecord], None]]:
        """What the event log tells of each new event."""
        out: list[Callable[[EventRecord], None]] = [self.metrics.observe]
        if self.webhooks is not None:
            out.append(self.webhooks.observe)
        return out

    def methods(self) -> dict[str, Handler]:
        """``webhooks.status`` and ``webhooks.redeliver``."""
        return webhook_methods(self.webhooks)

    def attach(
        self,
        *,
        running_commands: Callable[[], int],
        slot_limit: Callable[[], int],
        storage_ok: Callable[[], bool],
    ) -> None:
        """Give the scrape the running daemon's live values."""
        self.metrics.attach(
            Runtime(
                running_commands=running_commands,
                slot_limit=slot_limit,
                storage_ok=storage_ok,
                webhook_lags=None if self.webhooks is None else self.webhooks.lags,
            )
        )

    async def start(self, tg: TaskGroup) -> None:
        """Start the metrics' counting, the webhook followers and the /metrics server in ``tg``;
        returns once each runs (a /metrics address in use raises ``OSError``)."""
        await tg.start(self.metrics.run)
        if self.webhooks is not None:
            await tg.start(self.webhooks.run)
        if self.listen is not None:
            host, port = self.listen
            await tg.start(serve_metrics, host, port, self.metrics.scrape)
