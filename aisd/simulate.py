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
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import anyio

from aisd._simulation import (
    Progress,
    Setup,
    Summary,
    billed_totals,
    max_in_window,
    months_between,
    plan_consents,
    progress_line,
    render,
    violations,
)
from aisd._simulation_world import World, watched
from aisd.billing import report
from aisd.clock import SystemClock, VirtualClock
from aisd.sandbox import Sandbox
from aisd.settings import Settings
from aisd.store import (
    EventRecord,
    ImportQuery,
    ImportRecord,
    ImportState,
    Store,
    TokenRecord,
)
from aisd.wiring import Hooks, embedded_sandbox, open_core

__all__ = ["Simulation", "main", "simulate"]

# After the last virtual day no refresh is planned; imports still under way may finish
# within this much more virtual time.
DRAIN = timedelta(hours=1)
_EVENT_PAGE = 1000
_ALL = 1_000_000_000
_LIMIT_EXCEEDED = "MultipleAccessLimitExceeded"
REDRAW_SECONDS = 0.1
# Without a terminal: a line per tenth of the run, and at least this often (a CI log shows life).
PLAIN_EVERY_SECONDS = 30.0
BAR_WIDTH = 24


@dataclass(frozen=True, slots=True)
class Simulation:
    """A finished run: the report's values and the records behind them.

    Attributes:
        summary: the values the report shows.
        setup: what the run was set up with.
        sandbox: the sandbox, whose ``stats`` are the provider's own record of the run.
        tokens: every token at the end.
        imports: every import at the end.
        events: the whole event feed.
    """

    summary: Summary
    setup: Setup
    sandbox: Sandbox
    tokens: tuple[TokenRecord, ...]
    imports: tuple[ImportRecord, ...]
    events: tuple[EventRecord, ...]

    @property
    def ok(self) -> bool:
        """Whether every rule held."""
        return not violations(self.summary)


def main(settings: Settings, *, days: int, tokens: int) -> int:
    """Run ``days`` virtual days with ``tokens`` consents, show progress on stderr (a bar on a
    terminal, plain lines otherwise) and print the report on stdout.

    Returns:
        0 when every rule held, 1 otherwise.
    """
    # The report is the output: thousands of per-import info lines, stamped with real time,
    # would bury it. Warnings and errors still show; AISD_LOG_LEVEL=debug shows everything.
    aisd_log = logging.getLogger("aisd")
    level = aisd_log.level
    if settings.log_level != "debug":
        aisd_log.setLevel(max(logging.getLogger().getEffectiveLevel(), logging.WARNING))
    shown = ProgressReport(sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="aisd-simulate-", dir=scratch_dir()) as workdir:
            run = functools.partial(simulate, settings, days=days, tokens=tokens, progress=shown)
            result = anyio.run(run, Path(workdir), backend="asyncio")
    finally:
        shown.close()
        aisd_log.setLevel(level)
    print(render(result.summary, result.setup))
    return 0 if result.ok else 1


def scratch_dir() -> str | None:
    """Where the throwaway database goes: memory-backed ``/dev/shm`` when there is one (its
    fsyncs cost nothing, and the run measures the planner, not the disk), else the default
    temporary directory."""
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private 0700 directory in it
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


class ProgressReport:
    """Shows a run's progress on ``stream``: a bar redrawn in place at most every
    :data:`REDRAW_SECONDS` on a terminal, else a plain line per tenth of the run and at least
    every :data:`PLAIN_EVERY_SECONDS`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._began = time.monotonic()
        self._shown_at = -REDRAW_SECONDS
        self._tenths = -1
        self._last: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        """Note ``progress``; show it if it is time to."""
        self._last = progress
        now = time.monotonic()
        if self._tty:
            if now - self._shown_at >= REDRAW_SECONDS:
                self._shown_at = now
                self._draw(progress, now)
            return
        tenths = int(progress.fraction * 10)
        if tenths > self._tenths or now - self._shown_at >= PLAIN_EVERY_SECONDS:
            self._tenths = tenths
            self._shown_at = now
            self._stream.write(progress_line(progress, now - self._began) + "\n")
            self._stream.flush()

    def close(self) -> None:
        """End the bar's line (a terminal) with the last progress drawn in full."""
        if self._tty and self._last is not None:
            self._draw(self._last, time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, progress: Progress, now: float) -> None:
        width = shutil.get_terminal_size().columns
        line = progress_line(progress, now - self._began, bar=BAR_WIDTH)
        self._stream.write("\r" + line[: width - 1].ljust(width - 1))
        self._stream.flush()


async def simulate(
    settings: Settings,
    workdir: Path,
    *,
    days: int,
    tokens: int,
    progress: Callable[[Progress], None] | None = None,
) -> Simulation:
    """Run the scenario of :func:`aisd._simulation.plan_consents` for ``days`` virtual days.

    Args:
        settings: the configuration in force (quota, access days, polling, warnings).
        workdir: where the temporary database is created.
        days: virtual days to run.
        tokens: consents to make.
        progress: called with the run's progress whenever virtual time moves.

    Returns:
        The summary and the records it was computed from.
    """
    real = SystemClock()
    real_start = real.monotonic()
    clock = VirtualClock(real.now().replace(microsecond=0))
    start = clock.now()
    end = start + timedelta(days=days)
    box = embedded_sandbox(settings, clock)
    plans = plan_consents(tokens, days, settings.access_days)
    setup = Setup(
        days=days,
        plans=tuple(plans),
        refreshes_per_day=settings.refreshes_per_day,
        history_days=settings.first_import_history_days,
        overlap_days=settings.refresh_overlap_days,
        command_seconds=box.config.command_seconds,
        poll_seconds=(settings.poll_min_seconds, settings.poll_max_seconds),
        max_running=settings.max_running_commands,
        tick_seconds=settings.planner_tick_seconds,
        database=str(workdir.parent),
    )
    hooks = Hooks()
    async with open_core(
        settings,
        clock=clock,
        sandbox=box,
        db_path=workdir / "aisd.db",
        hooks=hooks,
        wrap_store=functools.partial(watched, clock=clock),
        scratch_db=True,
    ) as core:
        world = World(core, hooks, clock, box)
        store = core.store

        def advanced() -> None:
            if progress is not None:
                progress(Progress(start, end, clock.now(), box.stats.commands_created))

        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(clock.run, on_advance=advanced))
            await tg.start(world.pipeline.run)
            async with anyio.create_task_group() as scenario:
                scenario.start_soon(world.consents, plans)
                scenario.start_soon(world.planner, end)
            await world.drain(end + DRAIN)
            tg.cancel_scope.cancel()
        return await _gather(
            settings, setup, store, box, start, clock.now(), real.monotonic() - real_start
        )


async def _gather(
    settings: Settings,
    setup: Setup,
    store: Store,
    box: Sandbox,
    start: datetime,
    end: datetime,
    real_seconds: float,
) -> Simulation:
    tokens = await store.list_tokens()
    imports = await store.imports(ImportQuery(limit=_ALL))
    events: list[EventRecord] = []
    while page := (
        await store.events(after=events[-1].id if events else 0, limit=_EVENT_PAGE)
    ).events:
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
    return Simulation(summary, setup, box, tuple(tokens), tuple(imports), tuple(events))
