"""Where ``aisd simulate``'s time per import goes: the store's calls, counted and timed.

    .venv/bin/python bench/simulate_bench.py [DAYS] [TOKENS] [--from-day N] [--no-gc]  # 6 50, 2

Runs the simulation as ``aisd simulate`` does (a throwaway database in /dev/shm, warnings only)
and, from virtual day 2 on (the first imports' year of history is a one-off; ``--from-day``
moves that start later, to see what grows with the history), counts every store
call the daemon's parts and the simulation make, and times the statements of each on the event
loop's thread (the scratch store runs them inline). Prints the process's CPU per import in
that window, then per store method: calls per import, statement milliseconds per import and
per call. Timings include nothing of the other tasks the store call lets run. ``--no-gc``
runs it with the cyclic garbage collector off (whether collections are what grows).
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import structlog

from aisd import _simulation_world
from aisd._simulation import Progress
from aisd.settings import Settings
from aisd.simulate import scratch_dir, simulate
from aisd.store.sqlite import _inline

WARM_UP_DAYS = 2

_method: ContextVar[str] = ContextVar("method", default="?")


class _Tally:
    """Calls and statement seconds per store method, from the warm-up's end."""

    def __init__(self, from_day: int) -> None:
        self.from_seconds = from_day * 86400
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.counting = False
        self.imports_at_start = 0
        self.cpu_at_start = 0.0

    def progress(self, progress: Progress) -> None:
        if not self.counting and (progress.now - progress.started_at).total_seconds() > (
            self.from_seconds
        ):
            self.counting = True
            self.imports_at_start = progress.imports
            self.cpu_at_start = time.process_time()


@contextmanager
def _instrumented(tally: _Tally) -> Iterator[None]:
    """Wrap the simulation's store seam and the inline connection to feed ``tally``."""
    external = _simulation_world._external
    execute = _inline.InlineConnection._execute

    def counted(clock: Any, target: Callable[..., Any]) -> Callable[..., Any]:
        inner = external(clock, target)
        name = target.__name__

        async def call(*args: Any, **kwargs: Any) -> Any:
            if tally.counting:
                tally.calls[name] += 1
            token = _method.set(name)
            try:
                return await inner(*args, **kwargs)
            finally:
                _method.reset(token)

        return call

    async def timed(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if tally.counting:
                    name = _method.get()
                    tally.seconds[name] = tally.seconds.get(name, 0.0) + (
                        time.perf_counter() - began
                    )

        return await execute(self, run)

    _simulation_world._external = counted
    _inline.InlineConnection._execute = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        _simulation_world._external = external
        _inline.InlineConnection._execute = execute  # type: ignore[method-assign]


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("days", nargs="?", type=int, default=6)
    parser.add_argument("tokens", nargs="?", type=int, default=50)
    parser.add_argument("--from-day", type=int, default=WARM_UP_DAYS, help="count from this day")
    parser.add_argument("--no-gc", action="store_true", help="the garbage collector off")
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
    logging.getLogger("aisd").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tally = _Tally(args.from_day)
    began = time.process_time()
    with (
        _instrumented(tally),
        tempfile.TemporaryDirectory(prefix="aisd-bench-", dir=scratch_dir()) as workdir,
    ):
        run = functools.partial(
            simulate, Settings(), days=args.days, tokens=args.tokens, progress=tally.progress
        )
        result = anyio.run(run, Path(workdir), backend="asyncio")
    cpu = time.process_time() - tally.cpu_at_start
    imports = result.sandbox.stats.commands_created - tally.imports_at_start
    if not tally.counting or imports <= 0:
        raise SystemExit(f"the run ended before day {args.from_day}: give it more days")
    print(f"days {args.days}  tokens {args.tokens}  ok {result.ok}")
    print(f"whole run: {time.process_time() - began:.1f} s CPU")
    print(
        f"from day {args.from_day}: {imports} imports, {1000 * cpu / imports:.2f} ms CPU per import"
    )
    print(f"{'method':<20} {'calls/import':>12} {'SQL ms/import':>14} {'SQL ms/call':>12}")
    for name, calls in tally.calls.most_common():
        seconds = tally.seconds.get(name, 0.0)
        print(
            f"{name:<20} {calls / imports:>12.2f} {1000 * seconds / imports:>14.2f}"
            f" {1000 * seconds / calls:>12.3f}"
        )
    total_calls = sum(tally.calls.values())
    total_seconds = sum(tally.seconds.values())
    print(f"{'all':<20} {total_calls / imports:>12.2f} {1000 * total_seconds / imports:>14.2f}")


if __name__ == "__main__":
    main()
