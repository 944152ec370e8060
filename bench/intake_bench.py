"""Benchmark of the socket's intake: ``consent.submit`` from many concurrent clients.

Usage: ``python bench/intake_bench.py [--clients 50] [--requests 2000]``

It starts the real daemon (``python -m aisd run --sandbox``) with its database and socket in a
temporary directory and JSON logs in a file there, waits for ``daemon.status`` to answer, then
opens one connection per client and sends ``--requests`` ``consent.submit`` calls in all, each
with its own ``sessionId`` (made-up sessions: their imports fail upstream, which is not what is
measured, though the daemon does that work meanwhile). It prints requests/s, the p50/p99/max
latency of one request (send to answer, on a connection used for one request at a time), the
errors by code, the daemon's log size (and that no signature is in it), then stops the daemon
with SIGTERM and prints its exit code and how long the drain took.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class Connection:
    """One JSON-RPC connection to the daemon, one request at a time."""

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._ids = 0

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the whole response object."""
        self._ids += 1
        request = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        await self._stream.send(json.dumps(request).encode() + b"\n")
        line = await self._reader.receive_until(b"\n", 1 << 20)
        response: dict[str, Any] = json.loads(line)
        return response


async def wait_ready(socket_path: Path, daemon: subprocess.Popen[bytes]) -> None:
    """Until ``daemon.status`` answers (or the daemon dies, or the start times out)."""
    with anyio.fail_after(START_TIMEOUT):
        while True:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode} before answering")
            try:
                async with await anyio.connect_unix(socket_path) as stream:
                    reply = await Connection(stream).call("daemon.status", {})
                    if "result" in reply:
                        return
            except OSError:
                pass
            await anyio.sleep(0.05)


async def client(
    socket_path: Path,
    number: int,
    count: int,
    latencies: list[float],
    errors: Counter[str],
) -> None:
    """Submit ``count`` distinct consents over one connection."""
    async with await anyio.connect_unix(socket_path) as stream:
        conn = Connection(stream)
        for i in range(count):
            params = {
                "ownerExternalId": f"bench-{number}",
                "sessionId": f"bench-{number}-{i}",
                "sessionIdSignature": f"sig-{number:04d}-{i:04d}",
            }
            began = time.perf_counter()
            reply = await conn.call("consent.submit", params)
            latencies.append(time.perf_counter() - began)
            if "error" in reply:
                errors[str(reply["error"].get("code"))] += 1


async def hammer(socket_path: Path, clients: int, requests: int) -> tuple[float, list[float]]:
    """Run every client at once; returns the wall time and the latencies."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    shares = [requests // clients + (1 if n < requests % clients else 0) for n in range(clients)]
    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for number, share in enumerate(shares):
            tg.start_soon(client, socket_path, number, share, latencies, errors)
    wall = time.perf_counter() - began
    print(f"errors: {dict(errors) or 'none'}")
    return wall, latencies


def start_daemon(tmp: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``python -m aisd run --sandbox`` with its state in ``tmp``, stdout to ``log``."""
    env = {
        **os.environ,
        "AISD_DB_PATH": str(tmp / "aisd.db"),
        "AISD_SOCKET_PATH": str(tmp / "aisd.sock"),
        "AISD_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aisd", "run", "--sandbox"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> None:
    """Start the daemon, hammer it, stop it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent connections")
    parser.add_argument("--requests", type=int, default=2000, help="consent.submit calls in all")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        socket_path = tmp / "aisd.sock"
        with (tmp / "daemon.log").open("wb") as log:
            daemon = start_daemon(tmp, log)
            try:
                anyio.run(wait_ready, socket_path, daemon, backend="asyncio")
                wall, latencies = anyio.run(
                    hammer, socket_path, args.clients, args.requests, backend="asyncio"
                )
            finally:
                stopping = time.perf_counter()
                daemon.send_signal(signal.SIGTERM)
                try:
                    code = daemon.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    code = daemon.wait()
                drain = time.perf_counter() - stopping
        logged = (tmp / "daemon.log").read_bytes()
    # Every signature sent starts with "sig-": none may reach a log line.
    leaks = logged.count(b"sig-")
    ms = [1000 * x for x in latencies]
    print(f"requests: {len(latencies)} from {args.clients} clients in {wall:.2f} s")
    print(f"throughput: {len(latencies) / wall:,.0f} requests/s")
    print(
        f"latency ms: p50 {percentile(ms, 50):.1f}  p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}"
    )
    lines = logged.count(b"\n")
    print(f"daemon log lines: {lines}, signatures in them: {leaks}")
    print(f"daemon stop (SIGTERM): exit code {code} after {drain:.2f} s")


if __name__ == "__main__":
    main()
