"""Benchmark of scale: planner ticks, start time, memory and idle CPU with many tokens.

Usage: ``python bench/scale_bench.py [--tokens 100000] [--also 1000000] [--idle-seconds 20]
[--rounds 3]`` or ``python bench/scale_bench.py --tokens N --ticks-only DB [--warm-ticks 40]``.

For each size N it builds a fresh database (the real migrations, then ``scale_population.sql``:
set-based SQL in one transaction) holding N tokens of realistic shape: owners with one or two
tokens, one or two bank accounts per token (an owner's tokens share them), a successful initial
import each, for a quarter of the owners' first tokens one to three Reuse accesses (and their
refresh imports) in the last 24 h, a few final tokens, and ``next_refresh_at`` spread over the
next 24 h. Then it prints:

* population time;
* ``Refresher.tick()`` against the real store when nothing is due and when ~100 and ~500
  tokens are due (ms per tick and per due token, and the tick's CPU time in this process), and
  ``store.status()``, which the daemon runs after every tick for its ``STATUS=`` line;
* the daemon (``python -m aisd run --sandbox``): seconds from spawn to ``READY=1`` (a fake
  ``$NOTIFY_SOCKET``) and to the first ``daemon.status`` answer, RSS after start and after a
  few 1 s ticks, one ``daemon.status`` round trip;
* idle CPU: with nothing due for the whole window and the default 30 s tick, the daemon's
  utime+stime over ``--idle-seconds`` of wall time, and how many ticks it ran meanwhile.

Figures only; nothing is asserted. The default size runs in well under two minutes; a second
size of 1,000,000 adds a few minutes (population dominates). ``--ticks-only DB`` times the ticks
alone on a copy of a kept database, so two checkouts can be compared on the same rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import httpx
import structlog

import aisd
from aisd.client import Client, DaemonUnavailable
from aisd.clock import SystemClock
from aisd.kontomatik import KontomatikClient
from aisd.planner import Rules
from aisd.refresh import Refresher, TickReport
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxApp, SandboxConfig
from aisd.store import open_store
from aisd.store.sqlite._codec import dt_in
from aisd.store.sqlite._migrate import migrate

WARNING_DAYS = (14, 7, 3, 1)
# The shape scale_population.sql writes (its own constants): 1.25 tokens an owner, 30 % of
# tokens with a second account, 5 % final, a Reuse or more in the last 24 h for a quarter of the
# owners' first tokens.
TOKENS_PER_OWNER = 1.25
POPULATION_SQL = Path(__file__).with_name("scale_population.sql")
START_DEADLINE_SECONDS = 300.0
# Tokens planned this soon are moved later before a daemon run, so nothing falls due in it.
QUIET_MARGIN = timedelta(minutes=10)
DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Population:
    """What :func:`populate` wrote and how long it took."""

    tokens: int
    active: int
    accesses_24h: int
    imports: int
    seconds: float
    megabytes: float


def populate(path: Path, n: int, *, now: datetime, seed: int = 7) -> Population:
    """Create a migrated database at ``path`` holding ``n`` tokens of realistic shape.

    Every active token is planned between ``now`` + :data:`QUIET_MARGIN` and ``now`` + 24 h.
    The rows are written set-based by :data:`POPULATION_SQL` in one transaction.
    """
    started = time.perf_counter()
    migrate(path)
    owners = max(1, int(n / TOKENS_PER_OWNER))
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        # Bulk load only, into a new file nobody else has open: no rollback journal and no
        # fsync (the daemon's own connections run in WAL mode with synchronous=FULL).
        conn.executescript(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
            " PRAGMA cache_size = -524288; PRAGMA temp_store = MEMORY;"
            " CREATE TEMP TABLE p (n INTEGER, owners INTEGER, now_us INTEGER, seed INTEGER);"
        )
        now_us = (now - _EPOCH) // timedelta(microseconds=1)
        conn.execute("INSERT INTO temp.p VALUES (?, ?, ?, ?)", (n, owners, now_us, seed))
        conn.executescript(f"BEGIN IMMEDIATE;\n{POPULATION_SQL.read_text()}\nCOMMIT;")
        conn.execute("PRAGMA journal_mode = WAL")
        active = conn.execute("SELECT COUNT(*) FROM tokens WHERE state = 'active'").fetchone()[0]
        reuses = conn.execute("SELECT COUNT(*) FROM accesses WHERE kind = 'reuse'").fetchone()[0]
        imports = conn.execute("SELECT COUNT(*) FROM imports").fetchone()[0]
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return Population(n, active, reuses, imports, time.perf_counter() - started, size / 2**20)


def make_due(path: Path, k: int, *, now: datetime, latest: bool = False) -> list[str]:
    """Make the ``k`` tokens planned soonest (or, ``latest``, last) due one second ago;
    returns their ids."""
    order = "DESC" if latest else "ASC"
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM tokens WHERE state = 'active' AND next_refresh_at > ?"
                f" ORDER BY next_refresh_at {order} LIMIT ?",
                (dt_in(now), k),
            )
        ]
        conn.executemany(
            "UPDATE tokens SET next_refresh_at = ? WHERE id = ?",
            [(dt_in(now - timedelta(seconds=1)), tid) for tid in ids],
        )
    return ids


def quiet_until(path: Path, until: datetime, *, seed: int = 11) -> int:
    """Drop queued refreshes and move every active token planned before ``until`` (or not
    planned) to a time within the 24 h after it, so a daemon started now finds nothing to do.
    Returns how many tokens moved."""
    rng = random.Random(seed)
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM imports WHERE state IN ('queued', 'running')")
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM tokens WHERE state = 'active' AND next_refresh_at < ?"
                " UNION ALL SELECT id FROM tokens WHERE state = 'active'"
                " AND next_refresh_at IS NULL",
                (dt_in(until),),
            )
        ]
        conn.executemany(
            "UPDATE tokens SET next_refresh_at = ? WHERE id = ?",
            [(dt_in(until + rng.random() * DAY), tid) for tid in ids],
        )
        conn.execute("COMMIT")
    return len(ids)


# -- the planner tick, in process ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickFigures:
    """Milliseconds of planner work against the real store; per due size, one entry per
    round: the tick's time, its CPU time (every thread of this process, the database's
    included: on a shared machine it moves far less than the wall time), the tokens it found
    due and the refreshes it queued."""

    idle_ms: float
    due_ms: dict[int, list[float]]
    due_cpu_ms: dict[int, list[float]]
    due_found: dict[int, list[int]]
    queued: dict[int, list[int]]
    counts_ms: float

    def due_median_ms(self, k: int) -> float:
        """The median tick time with ``k`` tokens due."""
        return statistics.median(self.due_ms[k])


async def _timed_tick(refresher: Refresher) -> tuple[float, float, TickReport]:
    began, cpu = time.perf_counter(), time.process_time()
    report = await refresher.tick()
    return (time.perf_counter() - began) * 1000, (time.process_time() - cpu) * 1000, report


def park(path: Path, token_ids: list[str], *, until: datetime) -> None:
    """Plan ``token_ids`` at ``until`` and drop the refreshes queued for them: the warm-up
    ticks' tokens stay out of the timed ticks."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE tokens SET next_refresh_at = ? WHERE id = ?",
            [(dt_in(until), token_id) for token_id in token_ids],
        )
        conn.executemany(
            "DELETE FROM imports WHERE token_id = ? AND kind = 'refresh' AND phase <> 'done'",
            [(token_id,) for token_id in token_ids],
        )
        conn.execute("COMMIT")


async def measure_ticks(
    path: Path,
    due_sizes: tuple[int, ...] = (100, 500),
    *,
    rounds: int = 3,
    warm_ticks: int = 0,
    warm_due: int = 500,
) -> TickFigures:
    """Time ticks with nothing due, then ``rounds`` ticks with each of ``due_sizes`` tokens
    due (the next ones planned: cold pages and fsyncs vary), and ``store.status()``. Leaves
    the due tokens' refreshes queued.

    ``warm_ticks`` untimed ticks of ``warm_due`` due tokens run first, so the process is in
    the state of a daemon that has planned for a while (its allocator and any cache the
    planner keeps), not one that has just started. They take the tokens planned last and are
    planned two days later afterwards: the timed ticks find the same tokens due as without
    them."""
    sandbox = Sandbox(SandboxConfig(api_key=DEFAULT_API_KEY))
    transport = httpx.ASGITransport(app=SandboxApp(sandbox))
    async with (
        open_store(path) as store,
        KontomatikClient("http://sandbox.invalid", DEFAULT_API_KEY, transport=transport) as client,
    ):
        clock = SystemClock()
        refresher = Refresher(
            store,
            client,
            clock,
            rules=Rules(),
            overlap_days=3,
            warning_days=WARNING_DAYS,
            wake_pipeline=lambda: None,
        )
        await refresher.tick()  # warm the page cache, as a running daemon's is
        warmed: list[str] = []
        for _ in range(warm_ticks):
            warm = partial(make_due, path, warm_due, now=clock.now(), latest=True)
            warmed += await anyio.to_thread.run_sync(warm)
            await refresher.tick()
        if warmed:
            parked = partial(park, path, warmed, until=clock.now() + 2 * DAY)
            await anyio.to_thread.run_sync(parked)
        idle = [(await _timed_tick(refresher))[0] for _ in range(5)]
        due_ms: dict[int, list[float]] = {k: [] for k in due_sizes}
        due_cpu_ms: dict[int, list[float]] = {k: [] for k in due_sizes}
        found: dict[int, list[int]] = {k: [] for k in due_sizes}
        queued: dict[int, list[int]] = {k: [] for k in due_sizes}
        for k in due_sizes:
            for _ in range(rounds):
                await anyio.to_thread.run_sync(partial(make_due, path, k, now=clock.now()))
                ms, cpu_ms, report = await _timed_tick(refresher)
                due_ms[k].append(ms)
                due_cpu_ms[k].append(cpu_ms)
                found[k].append(report.due)
                queued[k].append(report.queued)
        counts = []
        for _ in range(3):
            began = time.perf_counter()
            await store.status(now=clock.now())
            counts.append((time.perf_counter() - began) * 1000)
    return TickFigures(
        statistics.median(idle), due_ms, due_cpu_ms, found, queued, statistics.median(counts)
    )


# -- the daemon, as a process --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonFigures:
    """One daemon run: start, memory, CPU over a watched window."""

    ready_s: float
    status_s: float
    rss_start_mib: float
    rss_after_mib: float
    window_s: float
    cpu_s: float
    ticks: int
    status_call_ms: float
    exit_code: int

    @property
    def cpu_percent(self) -> float:
        """CPU time over wall time in the window."""
        return 100 * self.cpu_s / self.window_s


def rss_mib(pid: int) -> float:
    """``VmRSS`` of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Notifications:
    """A fake ``$NOTIFY_SOCKET``: collects what the daemon tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self.messages: list[str] = []

    def drain(self, timeout: float) -> list[str]:
        """Messages arriving within ``timeout`` seconds (returns at the first batch)."""
        got: list[str] = []
        ready, _, _ = select.select([self._sock], [], [], timeout)
        while ready:
            got.append(self._sock.recv(4096).decode())
            ready, _, _ = select.select([self._sock], [], [], 0)
        self.messages.extend(got)
        return got

    def close(self) -> None:
        """Close and unlink the socket."""
        self._sock.close()
        self.path.unlink(missing_ok=True)


def _ticks(messages: list[str]) -> int:
    return sum(m.startswith("STATUS=tokens") for m in messages)


def daemon_env(db: Path, workdir: Path, notify: Path, tick_seconds: float | None) -> dict[str, str]:
    """The daemon's environment: ours without any ``AISD_*`` or systemd variables, plus
    the database, a socket in ``workdir`` and the fake notify socket."""
    dropped = ("AISD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        AISD_DB_PATH=str(db),
        AISD_SOCKET_PATH=str(workdir / "aisd.sock"),
        NOTIFY_SOCKET=str(notify),
    )
    if tick_seconds is not None:
        env["AISD_PLANNER_TICK_SECONDS"] = str(tick_seconds)
    return env


@contextmanager
def spawned(env: dict[str, str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m aisd run --sandbox``, killed on the way out if still running."""
    with (workdir / "daemon.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisd", "run", "--sandbox"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_daemon(
    db: Path, workdir: Path, *, tick_seconds: float | None, window: float
) -> DaemonFigures:
    """Start the daemon on ``db``, wait for its first tick, watch it for ``window`` seconds,
    then stop it with SIGTERM."""
    notify = Notifications(workdir / "notify.sock")
    client = Client(workdir / "aisd.sock", timeout=60.0)
    probe = Client(workdir / "aisd.sock", timeout=1.0)
    env = daemon_env(db, workdir, notify.path, tick_seconds)
    try:
        began = time.monotonic()
        with spawned(env, workdir) as proc:
            ready_s = status_s = None
            deadline = began + START_DEADLINE_SECONDS
            while ready_s is None or status_s is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not start: see {workdir / 'daemon.log'}")
                if any(m.startswith("READY=1") for m in notify.drain(0.005)) and ready_s is None:
                    ready_s = time.monotonic() - began
                if status_s is None:
                    try:
                        probe.status()
                    except DaemonUnavailable:
                        continue
                    status_s = time.monotonic() - began
            rss_start = rss_mib(proc.pid)
            while _ticks(notify.messages) == 0:  # the tick at start
                notify.drain(1.0)
            seen = _ticks(notify.messages)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            while (left := t0 + window - time.monotonic()) > 0:
                notify.drain(left)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            ticks = _ticks(notify.messages) - seen
            calls = []
            for _ in range(3):
                call_began = time.perf_counter()
                client.status()
                calls.append((time.perf_counter() - call_began) * 1000)
            rss_after = rss_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    finally:
        notify.close()
    return DaemonFigures(
        ready_s=ready_s,
        status_s=status_s,
        rss_start_mib=rss_start,
        rss_after_mib=rss_after,
        window_s=t1 - t0,
        cpu_s=cpu1 - cpu0,
        ticks=ticks,
        status_call_ms=statistics.median(calls),
        exit_code=code,
    )


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SizeFigures:
    """Everything measured at one size."""

    population: Population
    ticks: TickFigures
    busy: DaemonFigures
    idle: DaemonFigures


def _print_population(pop: Population) -> None:
    print(
        f"population: {pop.seconds:.1f} s ({pop.tokens:,} tokens, {pop.active:,} active, "
        f"{pop.accesses_24h:,} reuses in 24 h, {pop.imports:,} imports, {pop.megabytes:.0f} MiB)",
        flush=True,
    )


def _print_ticks(ticks: TickFigures) -> None:
    print(f"tick, nothing due: {ticks.idle_ms:.2f} ms; store.status(): {ticks.counts_ms:.1f} ms")
    for k, times in ticks.due_ms.items():
        ms, found = ticks.due_median_ms(k), max(ticks.due_found[k])
        print(
            f"tick, {found} due ({ticks.queued[k]} queued): {ms:.0f} ms median of "
            f"{', '.join(f'{t:.0f}' for t in times)}; {ms / max(found, 1):.2f} ms per due token; "
            f"CPU {statistics.median(ticks.due_cpu_ms[k]):.0f} ms median",
            flush=True,
        )


def ticks_only(db: Path, n: int, rounds: int, warm_ticks: int = 0) -> None:
    """Measure the ticks alone on a copy of the database at ``db``, populating it with ``n``
    tokens first if it does not exist: a kept database lets two versions of aisd be timed on
    the same rows, run after run (each on a fresh copy, so none sees the other's ticks)."""
    # Which checkout runs is part of the figures (PYTHONPATH may pick another one).
    print(f"aisd from {Path(aisd.__file__).parent}; load {os.getloadavg()[0]:.2f}", flush=True)
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        _print_population(populate(db, n, now=datetime.now(UTC)))
    work = db.with_name(db.name + ".run")
    shutil.copyfile(db, work)
    # Tokens whose plan came while the database was kept would be due before those made due.
    quiet_until(work, datetime.now(UTC) + QUIET_MARGIN)
    try:
        measure = partial(measure_ticks, work, rounds=rounds, warm_ticks=warm_ticks)
        _print_ticks(anyio.run(measure, backend="asyncio"))
    finally:
        for path in work.parent.glob(work.name + "*"):
            path.unlink()
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)


def measure_size(n: int, idle_seconds: float, workdir: Path, rounds: int = 3) -> SizeFigures:
    """Populate ``n`` tokens in ``workdir`` and take every measurement."""
    db = workdir / "aisd.db"
    print(f"\n== {n:,} tokens", flush=True)
    pop = populate(db, n, now=datetime.now(UTC))
    _print_population(pop)
    ticks = anyio.run(partial(measure_ticks, db, rounds=rounds), backend="asyncio")
    _print_ticks(ticks)
    quiet_until(db, datetime.now(UTC) + QUIET_MARGIN + timedelta(seconds=idle_seconds))
    busy = run_daemon(db, workdir, tick_seconds=1.0, window=5.0)
    print(
        f"daemon start: READY=1 after {busy.ready_s:.2f} s, daemon.status after "
        f"{busy.status_s:.2f} s; RSS {busy.rss_start_mib:.1f} MiB at start, "
        f"{busy.rss_after_mib:.1f} MiB after {busy.ticks} ticks of 1 s "
        f"(CPU {busy.cpu_percent:.1f} %); daemon.status call {busy.status_call_ms:.1f} ms",
        flush=True,
    )
    idle = run_daemon(db, workdir, tick_seconds=None, window=idle_seconds)
    print(
        f"idle, default 30 s tick: CPU {idle.cpu_s:.3f} s over {idle.window_s:.1f} s = "
        f"{idle.cpu_percent:.2f} % ({idle.ticks} ticks in the window); start "
        f"{idle.status_s:.2f} s; exit codes {busy.exit_code}/{idle.exit_code}",
        flush=True,
    )
    return SizeFigures(pop, ticks, busy, idle)


def _compare(small: SizeFigures, large: SizeFigures) -> None:
    rows = [
        ("population s", small.population.seconds, large.population.seconds),
        ("tick, none due ms", small.ticks.idle_ms, large.ticks.idle_ms),
        *[
            (f"tick, {k} due ms", small.ticks.due_median_ms(k), large.ticks.due_median_ms(k))
            for k in small.ticks.due_ms
            if k in large.ticks.due_ms
        ],
        ("store.status() ms", small.ticks.counts_ms, large.ticks.counts_ms),
        ("start to status s", small.busy.status_s, large.busy.status_s),
        ("RSS at start MiB", small.busy.rss_start_mib, large.busy.rss_start_mib),
        ("RSS after ticks MiB", small.busy.rss_after_mib, large.busy.rss_after_mib),
        ("daemon.status ms", small.busy.status_call_ms, large.busy.status_call_ms),
        ("idle CPU %", small.idle.cpu_percent, large.idle.cpu_percent),
    ]
    n1, n2 = small.population.tokens, large.population.tokens
    print(f"\n{'':<22}{n1:>12,}{n2:>12,}{'ratio':>8}   (tokens x{n2 / n1:.0f})")
    for name, a, b in rows:
        ratio = f"{b / a:>7.2f}x" if a > 0 else f"{'-':>8}"
        print(f"{name:<22}{a:>12.2f}{b:>12.2f}{ratio}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--also", type=int, default=None, help="a second size, for comparison")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--ticks-only",
        type=Path,
        metavar="DB",
        help="only the ticks, on the database DB (populated with --tokens tokens if missing)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="ticks per due size")
    parser.add_argument(
        "--warm-ticks",
        type=int,
        default=0,
        help="with --ticks-only: untimed ticks of 500 due tokens first (a daemon running a while)",
    )
    args = parser.parse_args(argv)
    # The in-process ticks log each planned batch; the figures are what this script prints.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.ticks_only is not None:
        ticks_only(args.ticks_only, args.tokens, args.rounds, args.warm_ticks)
        return
    sizes = [args.tokens] + ([args.also] if args.also else [])
    if max(sizes) >= 500_000:
        print(f"{max(sizes):,} tokens: expect several minutes (population dominates)")
    figures = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="aisd-scale-") as tmp:
            figures.append(measure_size(n, args.idle_seconds, Path(tmp), args.rounds))
    if len(figures) == 2:
        _compare(*figures)


if __name__ == "__main__":
    main(sys.argv[1:])
