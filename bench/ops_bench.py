"""Benchmark of the operations side: a /metrics scrape, webhook delivery, backup and verify.

Usage: ``python bench/ops_bench.py [--tokens 100000] [--events 2000]``

* scrape: :meth:`aisd.metrics.Metrics.scrape` against a database of ``--tokens`` tokens of
  realistic shape (``scale_bench.populate``): median and p90 ms over 20 scrapes;
* webhooks: ``--events`` events delivered by :class:`aisd.webhooks.Webhooks` to a receiver over
  loopback HTTP that answers 204 (keep-alive), against a floor: the same POSTs sent by plain
  httpx without signing or cursor writes. Deliveries/s of each and the ratio (each aisd delivery
  also commits its cursor with ``synchronous=FULL``);
* backup: ``aisd backup`` of that database (seconds, MB/s) and ``verify_backup`` alone.

Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

sys.path.insert(0, str(Path(__file__).parent))
from scale_bench import populate

from aisd.backup import take_backup, verify_backup
from aisd.clock import SystemClock
from aisd.metrics import Metrics
from aisd.store import NewEvent, SqliteStore, WebhookRegister, open_store
from aisd.store.sqlite._sync import emit
from aisd.webhooks import Webhooks

KEY = bytes(range(32))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


async def bench_scrape(store: SqliteStore) -> tuple[float, float, int]:
    metrics = Metrics(store, SystemClock(), max_running_commands=8)
    times = []
    size = 0
    for _ in range(20):
        began = time.perf_counter()
        size = len(await metrics.scrape())
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)], size


async def bench_webhooks(store: SqliteStore, url: str, events: int) -> tuple[float, float]:
    head = (await store.events(after=0, limit=0)).head
    await store.webhook_write(WebhookRegister((url,)), now=datetime.now(UTC))
    batch = [NewEvent("import.succeeded", "owner", None, None, {"n": i}) for i in range(events)]
    # Appended out of band, as if imports had ended: no daemon path appends bare events.
    await store._run(lambda db: emit(db, batch, datetime.now(UTC)))
    # The endpoint registered before the events: it delivers all of them.
    hooks = Webhooks(store, SystemClock(), urls=(url,), keys=[KEY])
    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        # A bench, not a test: polling the cursor costs a read per 50 ms, nothing more.
        while (await store.webhook_cursors([url]))[0].cursor < head + events:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    ours = events / (time.perf_counter() - began)
    bodies = (await store.events(after=head, limit=events)).events
    began = time.perf_counter()
    async with httpx.AsyncClient() as http:
        for event in bodies:
            await http.post(url, content=str(event.data).encode())
    floor = events / (time.perf_counter() - began)
    return ours, floor


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "aisd.db"
        population = populate(db, args.tokens, now=datetime.now(UTC))
        print(
            f"database: {population.tokens} tokens, {population.imports} imports, "
            f"{population.megabytes:.0f} MiB (built in {population.seconds:.1f} s)"
        )

        async def measure() -> None:
            async with open_store(db) as store:
                p50, p90, size = await bench_scrape(store)
                print(f"scrape: p50 {p50:.1f} ms, p90 {p90:.1f} ms, {size / 1024:.1f} KiB of text")
                ours, floor = await bench_webhooks(store, url, args.events)
                print(
                    f"webhooks: {ours:.0f} deliveries/s (signed, cursor committed each), "
                    f"floor {floor:.0f} POSTs/s, ratio {ours / floor:.2f}"
                )

        anyio.run(measure)
        began = time.perf_counter()
        summary = take_backup(db, Path(tmp), keep=1, now=datetime.now(UTC))
        seconds = time.perf_counter() - began
        megabytes = summary.size_bytes / 2**20
        print(
            f"backup: {megabytes:.0f} MiB in {seconds:.2f} s ({megabytes / seconds:.0f} MB/s), "
            "copy and verification included"
        )
        began = time.perf_counter()
        verify_backup(summary.path)
        print(f"verify alone: {time.perf_counter() - began:.2f} s")
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
