"""Benchmark of the socket's intake: ``consent.submit`` from many concurrent clients.

Usage: ``python bench/intake_bench.py [--clients 50] [--requests 2000] [--rate 5000]``

It starts the real daemon (``python -m aisd run --sandbox``) with its database and socket in a
temporary directory and JSON logs in a file there, waits for ``daemon.status`` to answer, then
opens one connection per client and sends ``--requests`` ``consent.submit`` calls in all, each
with its own ``sessionId`` (made-up sessions: their imports fail upstream, which is not what is
measured, though the daemon does that work meanwhile). It prints requests/s, the p50/p99/max
latency of one request (send to answer, on a connection used for one request at a time), the
errors by code, the daemon's log size (and that no signature is in it), then stops the daemon
with SIGTERM and prints its exit code and how long the drain took.

Two more runs give the figures their context. The same clients against a trivial JSON-RPC echo
server on a Unix socket (another process, answering every line at once) measure the client
side's ceiling on this machine in this run; the daemon's requests/s is printed as a ratio to it.
And with ``--rate R`` (0 skips it) the clients offer R requests/s in all on a fixed schedule,
each connection still one request at a time, and latency is counted from each request's
scheduled send time, so a stall shows in full rather than slowing the offered load down.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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


# Sessions stay distinct across the runs against one daemon.
_runs = itertools.count()


async def client(
    socket_path: Path,
    number: int,
    count: int,
    latencies: list[float],
    errors: Counter[str],
    schedule: tuple[float, float] | None,
) -> None:
    """Submit ``count`` distinct consents over one connection: each as soon as the one before
    is answered, or, with ``schedule`` = (first send time, interval), at its scheduled time
    (or at once when late), latency counted from that time."""
    run = next(_runs)
    async with await anyio.connect_unix(socket_path) as stream:
        conn = Connection(stream)
        for i in range(count):
            params = {
                "ownerExternalId": f"bench-{number}",
                "sessionId": f"bench-{run}-{number}-{i}",
                "sessionIdSignature": f"sig-{run:04d}-{number:04d}-{i:04d}",
            }
            if schedule is None:
                began = time.perf_counter()
            else:
                began = schedule[0] + i * schedule[1]
                await anyio.sleep(max(0.0, began - time.perf_counter()))
            reply = await conn.call("consent.submit", params)
            latencies.append(time.perf_counter() - began)
            if "error" in reply:
                errors[str(reply["error"].get("code"))] += 1


async def hammer(
    socket_path: Path, clients: int, requests: int, rate: float = 0.0
) -> tuple[float, list[float]]:
    """Run every client at once (on a fixed schedule offering ``rate`` requests/s in all when
    given); returns the wall time and the latencies."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    shares = [requests // clients + (1 if n < requests % clients else 0) for n in range(clients)]
    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for number, share in enumerate(shares):
            # The clients' schedules interleave evenly: client n sends at n/rate, then every
            # clients/rate seconds.
            schedule = None if not rate else (began + 0.05 + number / rate, clients / rate)
            tg.start_soon(client, socket_path, number, share, latencies, errors, schedule)
    wall = time.perf_counter() - began
    print(f"errors: {dict(errors) or 'none'}")
    return wall, latencies


async def echo_connection(stream: SocketStream) -> None:
    """Answer every request line with its id and a fixed result, nothing else."""
    reader = BufferedByteReceiveStream(stream)
    async with stream:
        with contextlib.suppress(
            anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError
        ):
            while True:
                line = await reader.receive_until(b"\n", 1 << 20)
                request = json.loads(line)
                result = {"importId": "imp_echo", "tokenId": None}
                reply = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
                await stream.send(json.dumps(reply).encode() + b"\n")


async def serve_echo(socket_path: Path) -> None:
    """The echo server's process: serve ``socket_path`` until killed."""
    listener = await anyio.create_unix_listener(socket_path)
    await listener.serve(echo_connection)


def echo_ceiling(tmp: Path, clients: int, requests: int) -> float:
    """The clients' requests/s against the echo server (in its own process)."""
    socket_path = tmp / "echo.sock"
    server = subprocess.Popen([sys.executable, __file__, "--serve-echo", str(socket_path)])
    try:
        for _ in range(200):
            if socket_path.exists():
                break
            time.sleep(0.05)
        wall, latencies = anyio.run(hammer, socket_path, clients, requests, backend="asyncio")
    finally:
        server.terminate()
        server.wait()
    ms = [1000 * x for x in latencies]
    rate = len(latencies) / wall
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    print(f"echo ceiling: {rate:,.0f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return rate


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
    parser.add_argument(
        "--rate",
        type=float,
        default=5000.0,
        help="offered requests/s of the scheduled run (0: none)",
    )
    parser.add_argument("--serve-echo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo is not None:
        anyio.run(serve_echo, args.serve_echo, backend="asyncio")
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        socket_path = tmp / "aisd.sock"
        ceiling = echo_ceiling(tmp, args.clients, args.requests)
        scheduled: list[float] = []
        with (tmp / "daemon.log").open("wb") as log:
            daemon = start_daemon(tmp, log)
            try:
                anyio.run(wait_ready, socket_path, daemon, backend="asyncio")
                wall, latencies = anyio.run(
                    hammer, socket_path, args.clients, args.requests, backend="asyncio"
                )
                if args.rate:
                    _, scheduled = anyio.run(
                        hammer,
                        socket_path,
                        args.clients,
                        args.requests,
                        args.rate,
                        backend="asyncio",
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
    rate = len(latencies) / wall
    print(f"throughput: {rate:,.0f} requests/s, {rate / ceiling:.2f} of the echo ceiling")
    print(
        f"latency ms: p50 {percentile(ms, 50):.1f}  p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}"
    )
    if scheduled:
        late = [1000 * x for x in scheduled]
        print(
            f"offered {args.rate:,.0f}/s on a schedule: latency ms from the scheduled send: "
            f"p50 {percentile(late, 50):.1f}  p99 {percentile(late, 99):.1f}  max {max(late):.1f}"
        )
    lines = logged.count(b"\n")
    print(f"daemon log lines: {lines}, signatures in them: {leaks}")
    print(f"daemon stop (SIGTERM): exit code {code} after {drain:.2f} s")


if __name__ == "__main__":
    main()
