"""Benchmark: concurrent ``submit_consent`` calls against the store itself (group commit).

Usage: ``python bench/submit_bench.py [--clients 50] [--requests 5000]``

``--clients`` tasks each submit their share of ``--requests`` distinct consents as fast as they
are answered, against a fresh SQLite store (WAL, ``synchronous=FULL``). Every answer comes only
after its batch committed. Prints throughput, latency percentiles and CPU per submit beside one
client alone (one commit, one fsync, per consent) as the baseline, and their ratio: what
coalescing buys.
No socket and no pipeline: this is the store's share of ``consent.submit``; the socket's is in
``intake_bench.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from disk_floor import fsync_floor

from aisd.store import ConsentIn, SqliteStore, open_store

NOW = datetime(2026, 5, 1, 8, tzinfo=UTC)


def _consent(client: int, i: int) -> ConsentIn:
    return ConsentIn(f"owner-{client}", f"session-{client}-{i}", f"signature-{client}-{i}")


async def _client(store: SqliteStore, client: int, count: int, latencies: list[float]) -> None:
    for i in range(count):
        began = time.perf_counter()
        await store.submit_consent(
            _consent(client, i), now=NOW, since=NOW.date(), expires_at=NOW + timedelta(days=90)
        )
        latencies.append(time.perf_counter() - began)


async def run(clients: int, requests: int) -> tuple[float, list[float], float]:
    """Wall seconds, latencies and CPU seconds (this process, the database thread included) of
    ``requests`` submits from ``clients`` tasks."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_store(Path(tmp) / "bench.db") as store:
            latencies: list[float] = []
            shares = [requests // clients + (n < requests % clients) for n in range(clients)]
            began, cpu = time.perf_counter(), time.process_time()
            async with anyio.create_task_group() as tg:
                for n, share in enumerate(shares):
                    tg.start_soon(_client, store, n, share, latencies)
            return time.perf_counter() - began, latencies, time.process_time() - cpu


def _report(label: str, wall: float, latencies: list[float], cpu: float) -> float:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    rate = len(latencies) / wall
    print(
        f"{label:>10}: {rate:8.0f} submits/s  p50 {q[49] * 1000:6.1f} ms"
        f"  p99 {q[98] * 1000:6.1f} ms  cpu {1e6 * cpu / len(latencies):5.0f} us/submit"
    )
    return rate


def main() -> None:
    """Run one client alone, then the concurrent clients; print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    alone = _report("1 client", *anyio.run(run, 1, min(args.requests, 500), backend="asyncio"))
    together = anyio.run(run, args.clients, args.requests, backend="asyncio")
    rate = _report(f"{args.clients} clients", *together)
    print(f"ratio {args.clients} clients / 1 client: {rate / alone:.1f}x")
    print(fsync_floor(Path(tempfile.gettempdir())).line())


if __name__ == "__main__":
    main()
