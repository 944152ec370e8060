"""``aisd simulate``: the real planner and pipeline on a virtual clock.

The real :class:`~aisd.refresh.Refresher`, :class:`~aisd.pipeline.Pipeline` and SQLite store (a
temporary database, never the operator's) run against the in-process sandbox, all on one
:class:`~aisd.clock.VirtualClock` that jumps over idle time. Planner ticks are driven here on
virtual time, as the daemon's APScheduler would: at each token's due time and on the tick grid
for what only the periodic tick finds (expiry, warnings, a token made due by a finished import).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import httpx

from aisd._simulation import (
    Summary,
    billed_totals,
    max_in_window,
    months_between,
    plan_consents,
    render,
    violations,
)
from aisd._simulation_world import World, watched
from aisd.billing import report
from aisd.clock import SystemClock, VirtualClock
from aisd.kontomatik import KontomatikClient
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxApp, SandboxConfig
from aisd.settings import Settings
from aisd.store import (
    EventRecord,
    ImportRecord,
    ImportState,
    Store,
    TokenRecord,
    open_store,
)

__all__ = ["Simulation", "main", "simulate"]

# After the last virtual day no refresh is planned; imports still under way may finish
# within this much more virtual time.
DRAIN = timedelta(hours=1)
_EVENT_PAGE = 1000
_ALL = 1_000_000_000
_LIMIT_EXCEEDED = "MultipleAccessLimitExceeded"


@dataclass(frozen=True, slots=True)
class Simulation:
    """A finished run: the report's values and the records behind them.

    Attributes:
        summary: the values the report shows.
        sandbox: the sandbox, whose ``stats`` are the provider's own record of the run.
        tokens: every token at the end.
        imports: every import at the end.
        events: the whole event feed.
    """

    summary: Summary
    sandbox: Sandbox
    tokens: tuple[TokenRecord, ...]
    imports: tuple[ImportRecord, ...]
    events: tuple[EventRecord, ...]

    @property
    def ok(self) -> bool:
        """Whether every rule held."""
        return not violations(self.summary)


def main(settings: Settings, *, days: int, tokens: int) -> int:
    """Run ``days`` virtual days with ``tokens`` consents and print the report.

    Returns:
        0 when every rule held, 1 otherwise.
    """
    # The report is the output: thousands of per-import info lines, stamped with real time,
    # would bury it. Warnings and errors still show; AISD_LOG_LEVEL=debug shows everything.
    aisd_log = logging.getLogger("aisd")
    level = aisd_log.level
    if settings.log_level != "debug":
        aisd_log.setLevel(max(logging.getLogger().getEffectiveLevel(), logging.WARNING))
    try:
        with tempfile.TemporaryDirectory(prefix="aisd-simulate-") as workdir:
            run = functools.partial(simulate, settings, days=days, tokens=tokens)
            result = anyio.run(run, Path(workdir), backend="asyncio")
    finally:
        aisd_log.setLevel(level)
    print(render(result.summary))
    return 0 if result.ok else 1


async def simulate(settings: Settings, workdir: Path, *, days: int, tokens: int) -> Simulation:
    """Run the scenario of :func:`aisd._simulation.plan_consents` for ``days`` virtual days.

    Args:
        settings: the configuration in force (quota, access days, polling, warnings).
        workdir: where the temporary database is created.
        days: virtual days to run.
        tokens: consents to make.

    Returns:
        The summary and the records it was computed from.
    """
    real = SystemClock()
    real_start = real.monotonic()
    clock = VirtualClock(real.now().replace(microsecond=0))
    start = clock.now()
    box = Sandbox(
        SandboxConfig(api_key=DEFAULT_API_KEY, token_days=settings.access_days),
        clock=clock.now,
    )
    async with (
        open_store(workdir / "aisd.db") as raw_store,
        KontomatikClient(
            "http://sandbox.invalid",
            DEFAULT_API_KEY,
            transport=httpx.ASGITransport(app=SandboxApp(box)),
            timeout=settings.http_timeout_seconds,
            max_reply_bytes=settings.max_reply_bytes,
        ) as client,
    ):
        store = watched(raw_store, clock)
        world = World(settings, clock, store, box, client)
        end = start + timedelta(days=days)
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(clock.run, on_advance=world.pipeline.wake))
            await tg.start(world.pipeline.run)
            async with anyio.create_task_group() as scenario:
                scenario.start_soon(
                    world.consents, plan_consents(tokens, days, settings.access_days)
                )
                scenario.start_soon(world.planner, end)
            await world.drain(end + DRAIN)
            tg.cancel_scope.cancel()
        return await _gather(
            settings, store, box, start, clock.now(), real.monotonic() - real_start
        )


async def _gather(
    settings: Settings,
    store: Store,
    box: Sandbox,
    start: datetime,
    end: datetime,
    real_seconds: float,
) -> Simulation:
    tokens = await store.list_tokens()
    imports = await store.list_imports(limit=_ALL)
    events: list[EventRecord] = []
    while page := await store.list_events(after=events[-1].id if events else 0, limit=_EVENT_PAGE):
        events += page
    ledger, _ = await store.reuse_ledger(
        [t.token_id for t in tokens], since=start - timedelta(days=2)
    )
    expiry = {t.token_id: t.expires_at for t in tokens}
    lives, billed = await store.billing_inputs()
    by_kind: dict[str, Counter[str]] = {}
    for record in imports:
        by_kind.setdefault(record.kind.value, Counter())[record.state.value] += 1
    summary = Summary(
        started_at=start,
        ended_at=end,
        real_seconds=real_seconds,
        refreshes_per_day=settings.refreshes_per_day,
        imports={kind: dict(states) for kind, states in by_kind.items()},
        reuses=len(ledger),
        windows={
            account: max_in_window(times, timedelta(hours=24))
            for account, times in box.stats.reuses_by_account.items()
        },
        limit_answers=sum(
            1
            for r in imports
            if r.state == ImportState.FAILED and r.error and r.error.name == _LIMIT_EXCEEDED
        ),
        late_reuses=sum(1 for e in ledger if e.at >= expiry[e.token_id]),
        events=dict(Counter(e.type for e in events)),
        tokens=dict(Counter(t.state.value for t in tokens)),
        months=tuple(report(lives, billed, y, m, end) for y, m in months_between(start, end)),
        billed=billed_totals(lives, billed, end),
    )
    return Simulation(summary, box, tuple(tokens), tuple(imports), tuple(events))
