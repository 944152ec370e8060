"""Benchmark: how intake's work is grouped, counted inside the daemon.

Usage: ``python bench/intake_counts.py [--clients 50] [--requests 10000] [--command-seconds 3600]``

Starts a stand-alone sandbox (its commands ``--command-seconds`` long: with 3600 the minted
imports never end during the run, so nothing is parsed or stored meanwhile), mints
``--requests`` consents there, and starts ``aisd run`` against it in a process of this script
that wraps three of the daemon's internals with counters before running it: the intake
batches (``GroupCommit``, each one transaction), the store's write groups and the planner's
ticks. Then ``intake_bench.py``'s closed loop: ``--clients`` connections, as fast as answered.
Prints that run's line (answers/s, latency, CPU a call), then the counts the daemon wrote when
it stopped: batches and their sizes, write groups, ticks. Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import intake_bench as ib

Popen = subprocess.Popen[bytes]


def _counted_daemon(out: Path, argv: list[str]) -> int:
    """Run the daemon with counters wrapped around its internals; write them to ``out``."""
    import aisd.refresh as refresh
    import aisd.store.sqlite._intake as intake
    import aisd.store.sqlite._store as sqlite_store
    from aisd.cli import main

    batches: Counter[int] = Counter()
    groups: Counter[int] = Counter()
    ticks = [0]
    write_batch = intake.GroupCommit._write
    write_group = sqlite_store.SqliteStore._write_group
    tick = refresh.Refresher.tick

    async def counted_batch(self: intake.GroupCommit, batch: list[Any]) -> None:
        batches[len(batch)] += 1
        await write_batch(self, batch)

    async def counted_group(self: sqlite_store.SqliteStore, writes: list[Any]) -> None:
        groups[len(writes)] += 1
        await write_group(self, writes)

    async def counted_tick(self: refresh.Refresher) -> Any:
        ticks[0] += 1
        return await tick(self)

    intake.GroupCommit._write = counted_batch  # type: ignore[method-assign]
    sqlite_store.SqliteStore._write_group = counted_group  # type: ignore[method-assign]
    refresh.Refresher.tick = counted_tick  # type: ignore[method-assign]

    def dump() -> None:
        counts = {"batches": sorted(batches.items()), "groups": sorted(groups.items())}
        out.write_text(json.dumps({**counts, "ticks": ticks[0]}))

    atexit.register(dump)
    return main(argv)


def _start(tmp: Path, args: argparse.Namespace, counts: Path) -> tuple[Popen, Popen, str]:
    """The stand-alone sandbox, then the counted daemon on it; returns both and the URL."""
    box, url = ib.start_sandbox(tmp, (tmp / "sandbox.log").open("wb"), args.command_seconds)
    env = {
        **os.environ,
        "AISD_DB_PATH": str(tmp / "aisd.db"),
        "AISD_SOCKET_PATH": str(tmp / "aisd.sock"),
        "AISD_LOG_FORMAT": "json",
        "AISD_API_URL": url,
        "AISD_API_KEY": ib.SANDBOX_KEY,
    }
    command = [sys.executable, __file__, "--counted-daemon", str(counts), "run"]
    with (tmp / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    return box, daemon, url


async def _measure(tmp: Path, args: argparse.Namespace, daemon: Popen, url: str) -> None:
    await ib.wait_ready(tmp / "aisd.sock", daemon, "daemon.status")
    minted = await ib.mint(url, ib.shares_of(args.requests, args.clients))
    run = await ib.closed_loop(
        tmp / "aisd.sock",
        args.clients,
        args.requests,
        "c",
        "minted, closed loop",
        daemon.pid,
        minted,
    )
    print(run.line())


def main() -> None:
    """Measure and print (or, with ``--counted-daemon``, be the counted daemon)."""
    if len(sys.argv) > 2 and sys.argv[1] == "--counted-daemon":
        sys.exit(_counted_daemon(Path(sys.argv[2]), sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--command-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        counts = tmp / "counts.json"
        box, daemon, url = _start(tmp, args, counts)
        try:
            asyncio.run(_measure(tmp, args, daemon, url))
        finally:
            ib.stop(daemon)
            ib.stop(box)
        found = json.loads(counts.read_text())
    batches = found["batches"]
    print(
        f"intake batches {sum(n for _, n in batches)} for "
        f"{sum(size * n for size, n in batches)} consents; sizes (size, batches): {batches}"
    )
    groups = found["groups"]
    print(f"store write groups {sum(n for _, n in groups)}; sizes (writes, groups): {groups}")
    print(f"planner ticks {found['ticks']}")


if __name__ == "__main__":
    main()
