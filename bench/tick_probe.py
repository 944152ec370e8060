"""Probes of the planner tick at scale: where its CPU goes, what the page cache buys, and the
pure planner alone.

Usage (``DB`` as ``scale_bench.py --ticks-only`` keeps it, populated with ``--tokens`` tokens
when missing):

    .venv/bin/python bench/tick_probe.py steps DB [--tokens N] [--record FILE]
    .venv/bin/python bench/tick_probe.py cache DB --cache-mib MIB [--fill] [--rounds 9]
    .venv/bin/python bench/tick_probe.py planner FILE [--repeat 30]

* ``steps``: ``scale_bench.py --ticks-only DB --warm-ticks 40 --rounds 7`` with each step of
  the tick's transaction timed on the thread that runs it (thread CPU): the due read, rows into
  records, the ledger read, the pure planner, the queued-refresh insert; prints each step's
  median over the timed ticks of 500 due, and the rest of the transaction. ``--record`` pickles
  the planner's inputs of those ticks for ``planner``.
* ``cache``: the writer's page cache at ``--cache-mib``, with ``--fill`` every table and index
  read through it first; then ticks whose 500 tokens fall due by the clock moving (no other
  connection writes, which in WAL mode would empty the writer's cache). Prints the ticks' CPU.
* ``planner``: the pure planner (``Refresher.plan_due``) on recorded inputs, in this process
  only: run it with another interpreter (``PYTHONPATH=. other-python bench/tick_probe.py
  planner FILE``) to compare builds.

Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pickle
import shutil
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import scale_bench as sb
import structlog

from aisd.kontomatik import KontomatikClient
from aisd.planner import Rules
from aisd.refresh import Refresher
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxApp, SandboxConfig
from aisd.store import LedgerEntry, TokenRecord, open_store
from aisd.store.sqlite import _steps
from aisd.store.sqlite._codec import dt_in, dt_out

# Only ticks this large are counted: the timed ticks of 500 due, not the idle or 100-due ones.
COUNTED_DUE = 400
TIMED_TICKS = 7
CACHE_WARM_UP_TICKS = 3

Recorded = tuple[list[TokenRecord], list[LedgerEntry], dict[str, frozenset[str]], datetime]


def _refresher(store: Any, client: KontomatikClient, clock: Any) -> Refresher:
    return Refresher(
        store,
        client,
        clock,
        rules=Rules(),
        overlap_days=3,
        warning_days=sb.WARNING_DAYS,
        wake_pipeline=lambda: None,
    )


@contextmanager
def _timed_steps(ticks: list[dict[str, float]], recorded: list[Recorded]) -> Iterator[None]:
    """Wrap the tick's steps in :mod:`aisd.store.sqlite._steps` with thread-CPU timers."""
    saved = {name: getattr(_steps, name) for name in ("rows", "token_records", "account_ledger")}
    plan_due = _steps.plan_due
    spent: dict[str, float] = defaultdict(float)

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - began

        return call

    def rows(db: sqlite3.Connection, name: str, params: Any = ()) -> list[sqlite3.Row]:
        return timed(f"statement {name}", saved["rows"])(db, name, params)  # type: ignore[no-any-return]

    def timed_plan_due(db: sqlite3.Connection, *, now: datetime, limit: int, planner: Any) -> Any:
        spent.clear()

        class Planner:
            def horizon(self, at: datetime) -> datetime:
                return planner.horizon(at)  # type: ignore[no-any-return]

            def decide(self, *inputs: Any) -> Any:
                if len(inputs[0]) >= COUNTED_DUE:
                    recorded.append(inputs)
                return timed("pure planner", planner.decide)(*inputs)

        began = time.thread_time()
        outcome = plan_due(db, now=now, limit=limit, planner=Planner())
        if len(outcome.due) >= COUNTED_DUE:
            ticks.append({**spent, "whole transaction": time.thread_time() - began})
        return outcome

    patches: dict[str, Callable[..., Any]] = {
        "rows": rows,
        "token_records": timed("rows into records", saved["token_records"]),
        "account_ledger": timed("ledger (statement and parsing)", saved["account_ledger"]),
        "plan_due": timed_plan_due,
    }
    for name, fn in patches.items():
        setattr(_steps, name, fn)
    try:
        yield
    finally:
        for name, fn in {**saved, "plan_due": plan_due}.items():
            setattr(_steps, name, fn)


def steps(db: Path, tokens: int, record: Path | None) -> None:
    """Time the tick's steps (see the module's docstring)."""
    ticks: list[dict[str, float]] = []
    recorded: list[Recorded] = []
    with _timed_steps(ticks, recorded):
        sb.ticks_only(db, tokens, TIMED_TICKS, warm_ticks=40)
    timed = ticks[-TIMED_TICKS:]
    whole = statistics.median(t["whole transaction"] for t in timed)
    print(f"the tick's transaction, thread CPU ms, median of {len(timed)} ticks of 500 due:")
    labels = sorted({k for t in timed for k in t} - {"whole transaction"})
    medians = {k: statistics.median(t.get(k, 0.0) for t in timed) for k in labels}
    for label, ms in sorted(medians.items(), key=lambda item: -item[1]):
        print(f"  {label:<44} {1000 * ms:6.1f}")
    named = sum(
        ms
        for label, ms in medians.items()
        # The ledger's statement is inside its step: counted once.
        if label != "statement reuse_ledger_of_accounts"
    )
    print(f"  {'the rest (plan updates, clearing, events)':<44} {1000 * (whole - named):6.1f}")
    print(f"  {'whole transaction':<44} {1000 * whole:6.1f}")
    if record is not None:
        with record.open("wb") as out:
            pickle.dump(recorded[-TIMED_TICKS:], out)
        print(f"recorded the planner's inputs of {min(len(recorded), TIMED_TICKS)} ticks: {record}")


async def _fill(writer: Any) -> None:
    """Read every table and index through ``writer`` (its page cache keeps what it reads)."""
    schema = await writer.execute_fetchall(
        "SELECT name, type, tbl_name FROM sqlite_schema"
        " WHERE type IN ('table', 'index') AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    )
    for name, kind, table in schema:
        if kind == "table":
            columns = [
                row[1] for row in await writer.execute_fetchall(f'PRAGMA table_info("{name}")')
            ]
            await writer.execute_fetchall(
                f'SELECT sum(length("{columns[-1]}")) FROM "{name}" NOT INDEXED'
            )
            continue
        columns = [row[2] for row in await writer.execute_fetchall(f'PRAGMA index_info("{name}")')]
        if not columns or not all(columns):
            continue  # an index on an expression
        # A partial index has no full scan: OperationalError.
        with contextlib.suppress(sqlite3.OperationalError):
            await writer.execute_fetchall(
                f'SELECT sum(length("{columns[-1]}")) FROM "{table}" INDEXED BY "{name}"'
            )


class _Fixed:
    """A clock that stands still where it is set."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


def cache(db: Path, tokens: int, cache_mib: int, fill: bool, rounds: int) -> None:
    """Time ticks that find 500 tokens due by the clock (see the module's docstring)."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        sb.populate(db, tokens, now=datetime.now(UTC))
    work = db.with_name(db.name + ".probe")
    shutil.copyfile(db, work)
    start = datetime.now(UTC) + sb.QUIET_MARGIN
    sb.quiet_until(work, start)

    async def run() -> list[float]:
        box = Sandbox(SandboxConfig(api_key=DEFAULT_API_KEY))
        transport = httpx.ASGITransport(app=SandboxApp(box))
        async with (
            open_store(work) as store,
            KontomatikClient(
                "http://sandbox.invalid", DEFAULT_API_KEY, transport=transport
            ) as client,
        ):
            writer = store._writer
            await writer.execute(f"PRAGMA cache_size = -{cache_mib * 1024}")
            if fill:
                began = time.perf_counter()
                await _fill(writer)
                print(f"filled the page cache in {time.perf_counter() - began:.1f} s", flush=True)
            clock = _Fixed(start)
            refresher = _refresher(store, client, clock)
            cpu: list[float] = []
            with closing(sqlite3.connect(work)) as look:
                for i in range(rounds + CACHE_WARM_UP_TICKS):
                    # The 500th plan after the clock: a tick then finds about 500 due.
                    (at,) = look.execute(
                        "SELECT next_refresh_at FROM tokens WHERE state = 'active'"
                        " AND next_refresh_at > ? ORDER BY next_refresh_at LIMIT 1 OFFSET 499",
                        (dt_in(clock.at),),
                    ).fetchone()
                    clock.at = dt_out(at)
                    _, cpu_ms, _ = await sb._timed_tick(refresher)
                    if i >= CACHE_WARM_UP_TICKS:
                        cpu.append(cpu_ms)
            return cpu

    try:
        cpu = anyio.run(run, backend="asyncio")
    finally:
        for path in work.parent.glob(work.name + "*"):
            path.unlink()
    shown = ", ".join(f"{c:.0f}" for c in cpu)
    print(
        f"page cache {cache_mib} MiB{', filled first' if fill else ''}: CPU ms of {len(cpu)} "
        f"ticks of 500 due {shown}; median {statistics.median(cpu):.1f}"
    )


def planner(recorded: Path, repeat: int) -> None:
    """Time the pure planner on recorded inputs (see the module's docstring)."""
    with recorded.open("rb") as source:
        inputs: list[Recorded] = pickle.load(source)
    refresher = _refresher(None, None, None)  # type: ignore[arg-type]
    seconds = []
    for _ in range(repeat):
        for due, ledger, accounts_of, now in inputs:
            began = time.process_time()
            refresher.plan_due(due, ledger, accounts_of, now)
            seconds.append(time.process_time() - began)
    print(
        f"{sys.version.split()[0]} ({sys.executable}): the pure planner on {len(inputs)} "
        f"recorded ticks x {repeat}: median {1000 * statistics.median(seconds):.2f} ms a tick"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    probes = parser.add_subparsers(dest="probe", required=True)
    p_steps = probes.add_parser("steps")
    p_steps.add_argument("db", type=Path)
    p_steps.add_argument("--tokens", type=int, default=1_000_000)
    p_steps.add_argument("--record", type=Path)
    p_cache = probes.add_parser("cache")
    p_cache.add_argument("db", type=Path)
    p_cache.add_argument("--tokens", type=int, default=1_000_000)
    p_cache.add_argument("--cache-mib", type=int, required=True)
    p_cache.add_argument("--fill", action="store_true")
    p_cache.add_argument("--rounds", type=int, default=9)
    p_planner = probes.add_parser("planner")
    p_planner.add_argument("recorded", type=Path)
    p_planner.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.probe == "steps":
        steps(args.db, args.tokens, args.record)
    elif args.probe == "cache":
        cache(args.db, args.tokens, args.cache_mib, args.fill, args.rounds)
    else:
        planner(args.recorded, args.repeat)


if __name__ == "__main__":
    main(sys.argv[1:])
