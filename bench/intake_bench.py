"""Benchmark of the socket's intake: ``consent.submit`` from many concurrent clients.

Usage: ``python bench/intake_bench.py [--clients 50] [--requests 5000] [--rate 5000]``

It starts the real daemon (``python -m aisd run --sandbox``) with its database and socket in a
temporary directory and JSON logs in a file there, and a trivial JSON-RPC echo server (a separate
process: it parses each line and answers a result of the same shape, nothing stored) on a second
Unix socket, and aisd's own JSON-RPC server (``aisd.rpc.RpcServer``: framing, peer check,
validation-free dispatch, encoding) answering ``consent.submit`` with a constant, nothing stored,
on a third: the floor of the socket layer alone. The same clients then measure them, in two
modes (the RPC floor in the closed loop only):

- closed loop: ``--clients`` connections, each sending its next request as soon as the previous
  answer is received: the throughput;
- open loop: the same connections offer ``--rate`` requests/s in all on a fixed schedule, each
  request sent at its scheduled time whether or not earlier ones were answered (pipelined on its
  connection); a request's latency runs from its *scheduled* send time to its answer, so a
  server that falls behind is charged for the queue it builds (no coordinated omission).

Each pair of runs (echo, then daemon) is back to back, so both see the same load of the shared
machine; each run is also charged with the CPU time the server process (all its threads) and
the client process used meanwhile, per call: a load-independent view of where the work is.

Every answer is counted only once it is received. Each call has its own ``sessionId`` (made-up
sessions: their imports fail upstream, which is the daemon's load meanwhile but not what is
measured). Then, unless ``--made-up-only``, both modes once more against a second daemon whose
upstream is a stand-alone sandbox (``python -m aisd sandbox``, its own process, commands of the
sandbox's normal length) and whose consents were minted there beforehand: sessions the sandbox
knows, so their imports queue and run as in production instead of all failing at once.
Afterwards each daemon is stopped with SIGTERM and its database is read: every acknowledged
``sessionId`` must be there (acknowledged means durable). Prints requests/s, p50, p99 and max
latency of each server in each mode, CPU microseconds per call of the server and of the client,
the daemon/echo ratios (throughput, p99, server CPU per call), errors by code, the daemons' log
lines and how many hold a secret (a signature, a minted ``multipleAccessId``: 0 expected), the
exit codes and stop times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from disk_floor import FsyncFloor, fsync_floor

START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
IDLE_TIMEOUT = 300.0
LINE_LIMIT = 1 << 20
SANDBOX_KEY = "bench-sandbox-key"
MINTERS = 8


@dataclass
class Run:
    """What one mode against one server measured."""

    label: str
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    # The minted consents' secrets it sent, which no log line may hold.
    secrets: set[str] = field(default_factory=set)
    # CPU seconds the server process and this client process used during the run.
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        """Answers received per second of the run."""
        return len(self.latencies) / self.wall if self.wall else 0.0

    def line(self) -> str:
        """The run's figures on one line."""
        ms = sorted(1000 * x for x in self.latencies)
        return (
            f"{self.label:<28} {len(ms):>6} answers in {self.wall:6.2f} s  "
            f"{self.rate:>8,.0f}/s  p50 {percentile(ms, 50):7.2f} ms  "
            f"p99 {percentile(ms, 99):8.2f} ms  max {ms[-1]:8.2f} ms  "
            f"cpu/call server {self._per_call(self.server_cpu):5.0f} us "
            f"client {self._per_call(self.client_cpu):4.0f} us"
        )

    def _per_call(self, seconds: float) -> float:
        return 1e6 * seconds / len(self.latencies) if self.latencies else float("nan")


def percentile(ordered: list[float], q: int) -> float:
    """The ``q``-th percentile of already sorted values."""
    if len(ordered) < 2:
        return ordered[0] if ordered else float("nan")
    return statistics.quantiles(ordered, n=100, method="inclusive")[q - 1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Metered:
    """Charges a run with the CPU its server (``pid``) and this client used meanwhile."""

    def __init__(self, run: Run, pid: int) -> None:
        self._run, self._pid = run, pid

    def __enter__(self) -> None:
        self._server, self._client = cpu_seconds(self._pid), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self._run.server_cpu = cpu_seconds(self._pid) - self._server
        self._run.client_cpu = time.process_time() - self._client


Minted = dict[str, Any]


def requests_of(
    number: int, count: int, tag: str, minted: list[Minted] | None = None
) -> list[tuple[str, bytes]]:
    """Client ``number``'s ``count`` ``consent.submit`` lines (encoded before the clock starts),
    each with a session of its own, and that session: made up, or the ``minted`` consents'
    params (``consent.submit``'s, as the sandbox's mint answered them)."""
    out = []
    for index in range(count):
        if minted is None:
            session = f"bench-{tag}-{number}-{index}"
            params: dict[str, Any] = {
                "ownerExternalId": f"bench-{number}",
                "sessionId": session,
                "sessionIdSignature": f"sig-{tag}-{number}-{index}-0123456789",
            }
        else:
            params = minted[index]
            session = params["sessionId"]
        body = {"jsonrpc": "2.0", "id": index, "method": "consent.submit", "params": params}
        out.append((session, json.dumps(body).encode() + b"\n"))
    return out


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _answer(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readuntil(b"\n")
    reply: dict[str, Any] = json.loads(line)
    return reply


def _record(run: Run, reply: dict[str, Any], session: str, latency: float) -> None:
    run.latencies.append(latency)
    if "error" in reply:
        run.errors[str(reply["error"].get("code"))] += 1
    else:
        run.acknowledged.append(session)


async def closed_client(conn: Conn, calls: list[tuple[str, bytes]], run: Run) -> None:
    """Send the calls one after another, each once the previous answer is in."""
    reader, writer = conn
    for session, line in calls:
        began = time.perf_counter()
        writer.write(line)
        reply = await _answer(reader)
        _record(run, reply, session, time.perf_counter() - began)


async def open_client(
    conn: Conn, calls: list[tuple[str, bytes]], schedule: list[float], run: Run
) -> None:
    """Send call ``i`` at ``schedule[i]`` (perf_counter time) however many are unanswered;
    each latency runs from the scheduled time to the answer."""
    reader, writer = conn

    async def receive() -> None:
        for _ in calls:
            reply = await _answer(reader)
            index = reply["id"]
            _record(run, reply, calls[index][0], time.perf_counter() - schedule[index])

    receiver = asyncio.create_task(receive())
    try:
        for (_, line), at in zip(calls, schedule, strict=True):
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(line)
            # Writes are buffered; wait only when the kernel pushes back.
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
        await receiver
    finally:
        receiver.cancel()


async def _connect(path: Path, clients: int) -> list[Conn]:
    return [await asyncio.open_unix_connection(str(path), limit=LINE_LIMIT) for _ in range(clients)]


def _close(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


def _secrets_of(minted: list[list[Minted]] | None) -> set[str]:
    params = [m for share in minted or [] for m in share]
    return {m["sessionIdSignature"] for m in params} | {m["multipleAccessId"] for m in params}


def shares_of(requests: int, clients: int) -> list[int]:
    """How many of ``requests`` calls each client sends (the same split in both modes)."""
    return [requests // clients + (1 if n < requests % clients else 0) for n in range(clients)]


async def closed_loop(
    path: Path,
    clients: int,
    requests: int,
    tag: str,
    label: str,
    pid: int,
    minted: list[list[Minted]] | None = None,
) -> Run:
    """Every client at once, as fast as answered; the CPU of the server ``pid`` is metered.
    ``minted``: each client's consents to submit (see :func:`mint`) instead of made-up ones."""
    run = Run(label, secrets=_secrets_of(minted))
    calls = [
        requests_of(n, share, tag, minted[n] if minted else None)
        for n, share in enumerate(shares_of(requests, clients))
    ]
    conns = await _connect(path, clients)
    began = time.perf_counter()
    try:
        with Metered(run, pid):
            await asyncio.gather(
                *(closed_client(c, k, run) for c, k in zip(conns, calls, strict=True))
            )
    finally:
        run.wall = time.perf_counter() - began
        _close(conns)
    return run


async def open_loop(
    path: Path,
    clients: int,
    requests: int,
    rate: float,
    tag: str,
    label: str,
    pid: int,
    minted: list[list[Minted]] | None = None,
) -> Run:
    """``requests`` in all at ``rate``/s: call ``k`` of the run is scheduled ``k / rate`` after
    the start and sent by client ``k % clients``. ``minted`` as for :func:`closed_loop`."""
    run = Run(label, secrets=_secrets_of(minted))
    # Client n sends calls n, n + clients, ...: as many as shares_of gives it.
    counts = [len(range(n, requests, clients)) for n in range(clients)]
    calls = [
        requests_of(n, count, tag, minted[n] if minted else None) for n, count in enumerate(counts)
    ]
    conns = await _connect(path, clients)
    start = time.perf_counter() + 0.05
    schedules = [[start + k / rate for k in range(n, requests, clients)] for n in range(clients)]
    try:
        with Metered(run, pid):
            await asyncio.gather(
                *(
                    open_client(conn, calls[n], schedules[n], run)
                    for n, conn in enumerate(conns)
                    if calls[n]
                )
            )
    finally:
        run.wall = time.perf_counter() - start
        _close(conns)
    return run


# -- the servers ----------------------------------------------------------------------------


async def _echo_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            body = json.loads(line)
            session = body["params"]["sessionId"]
            result = {"importId": f"imp-{session}", "tokenId": None}
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": result}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    finally:
        writer.close()


async def _rpc_floor_serve(path: str) -> None:
    # Imported here: the clients' process needs none of aisd.
    from aisd.rpc import RpcServer, open_listener

    async def submit(params: object, peer: object) -> object:
        return {"importId": "imp-floor", "tokenId": None}

    listener, _ = await open_listener(path, 0o600)
    me = frozenset({os.getuid()})
    server = RpcServer({"consent.submit": submit}, allowed_uids=me, allowed_gids=frozenset())
    await server.serve(listener)


async def _echo_serve(path: str) -> None:
    server = await asyncio.start_unix_server(_echo_connection, path=path, limit=LINE_LIMIT)
    async with server:
        await server.serve_forever()


def start_echo(path: Path, kind: str = "--echo-server") -> subprocess.Popen[bytes]:
    """The echo server (or with ``--rpc-floor-server`` the RPC floor), in a process of its own
    as the daemon is."""
    return subprocess.Popen([sys.executable, __file__, kind, str(path)])


def start_daemon(tmp: Path, log: IO[bytes], upstream: str | None = None) -> subprocess.Popen[bytes]:
    """``python -m aisd run --sandbox`` with its state in ``tmp``, stdout to ``log``; with
    ``upstream`` (a stand-alone sandbox's URL) ``aisd run`` against it instead."""
    env = {
        **os.environ,
        "AISD_DB_PATH": str(tmp / "aisd.db"),
        "AISD_SOCKET_PATH": str(tmp / "aisd.sock"),
        "AISD_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "aisd", "run"]
    if upstream is None:
        command.append("--sandbox")
    else:
        env.update(AISD_API_URL=upstream, AISD_API_KEY=SANDBOX_KEY)
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)


def start_sandbox(
    tmp: Path, log: IO[bytes], command_seconds: float | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m aisd sandbox`` on a free port of 127.0.0.1, its commands ``command_seconds``
    long (None: the sandbox's default), no state file; returns it and its URL once it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
    env.update(AISD_API_KEY=SANDBOX_KEY, AISD_LOG_FORMAT="json")
    command = [sys.executable, "-m", "aisd", "sandbox", "--port", str(port)]
    if command_seconds is not None:
        command += ["--command-seconds", str(command_seconds)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    deadline = time.monotonic() + START_TIMEOUT
    while b"sandbox listening on" not in Path(log.name).read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the sandbox did not start (exit code {process.poll()})")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}"


async def mint(url: str, shares: list[int]) -> list[list[Minted]]:
    """``shares[n]`` consents with a token for owner ``bench-n``, minted in the sandbox at
    ``url`` (its control endpoint, as the widget would get them): each client's
    ``consent.submit`` params."""
    todo = [n for n, share in enumerate(shares) for _ in range(share)]
    out: list[list[Minted]] = [[] for _ in shares]
    headers = {"X-Api-Key": SANDBOX_KEY}

    async def minter(client: httpx.AsyncClient) -> None:
        while todo:
            n = todo.pop()
            form = {"ownerExternalId": f"bench-{n}", "multipleAccess": "true"}
            reply = await client.post("/sandbox/mint", data=form, headers=headers)
            reply.raise_for_status()
            body = reply.json()
            out[n].append(
                {
                    "ownerExternalId": body["ownerExternalId"],
                    "sessionId": body["sessionId"],
                    "sessionIdSignature": body["sessionIdSignature"],
                    "multipleAccessId": body["multipleAccessId"],
                }
            )

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(minter(client) for _ in range(MINTERS)))
    return out


async def wait_ready(path: Path, process: subprocess.Popen[bytes], probe: str) -> None:
    """Until the server at ``path`` answers ``probe`` (or dies, or the start times out)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{probe}: the server exited with {process.returncode}")
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        params = {"sessionId": "probe"} if probe == "echo" else {}
        body = {"jsonrpc": "2.0", "id": 0, "method": probe, "params": params}
        writer.write(json.dumps(body).encode() + b"\n")
        reply = await _answer(reader)
        writer.close()
        if "result" in reply:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"{probe}: no answer within {START_TIMEOUT:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM, then wait; returns the exit code and the seconds it took."""
    began = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return code, time.perf_counter() - began


def missing_from(db: Path, sessions: list[str]) -> int:
    """How many acknowledged sessions the daemon's database does not hold."""
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT session_id FROM consents")}
    return sum(1 for s in sessions if s not in stored)


async def idle(path: Path) -> float:
    """Until the daemon has no import queued or running (the made-up sessions' imports of an
    earlier run), so each run starts from the same state; returns the seconds it took."""
    began = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(str(path), limit=LINE_LIMIT)
    try:
        while time.perf_counter() - began < IDLE_TIMEOUT:
            body = {"jsonrpc": "2.0", "id": 0, "method": "daemon.status", "params": {}}
            writer.write(json.dumps(body).encode() + b"\n")
            status = (await _answer(reader))["result"]
            if not status["queued"] and not status["imports"].get("running", 0):
                break
            await asyncio.sleep(0.2)
    finally:
        writer.close()
    return time.perf_counter() - began


@dataclass
class Servers:
    """The processes measured (``real``: the daemon on the stand-alone sandbox, if any) and
    their sockets."""

    daemon: subprocess.Popen[bytes]
    echo: subprocess.Popen[bytes]
    floor: subprocess.Popen[bytes]
    daemon_sock: Path
    echo_sock: Path
    floor_sock: Path
    real: subprocess.Popen[bytes] | None = None
    real_sock: Path | None = None
    sandbox_url: str | None = None


async def measure(args: argparse.Namespace, s: Servers) -> tuple[list[Run], float, FsyncFloor]:
    """Each mode against the echo server, then at once against the daemon (idle before each
    of its runs), so each pair runs under the same load of the machine, the RPC floor's closed
    loop between them; then, with a stand-alone sandbox, each mode against the daemon on it
    (the echo's runs just before it, again); returns the runs and the seconds the daemon took to
    become idle between its two, and the disk's floor in the daemon's directory, measured while
    it is idle just before the open-loop pair."""
    await wait_ready(s.daemon_sock, s.daemon, "daemon.status")
    await wait_ready(s.echo_sock, s.echo, "echo")
    await wait_ready(s.floor_sock, s.floor, "consent.submit")
    n, c, rate = args.requests, args.clients, args.rate
    open_label = f"open {rate:,.0f}/s"
    await idle(s.daemon_sock)
    runs = [
        await closed_loop(s.echo_sock, c, n, "ce", "echo, closed loop", s.echo.pid),
        await closed_loop(s.floor_sock, c, n, "cf", "rpc floor, closed loop", s.floor.pid),
        await closed_loop(s.daemon_sock, c, n, "cd", "daemon, closed loop", s.daemon.pid),
    ]
    settled = await idle(s.daemon_sock)
    floor = await asyncio.to_thread(fsync_floor, s.daemon_sock.parent)
    runs.append(await open_loop(s.echo_sock, c, n, rate, "oe", f"echo, {open_label}", s.echo.pid))
    runs.append(
        await open_loop(s.daemon_sock, c, n, rate, "od", f"daemon, {open_label}", s.daemon.pid)
    )
    if s.real is None or s.real_sock is None or s.sandbox_url is None:
        return runs, settled, floor
    await wait_ready(s.real_sock, s.real, "daemon.status")
    closed_minted = await mint(s.sandbox_url, shares_of(n, c))
    open_minted = await mint(s.sandbox_url, shares_of(n, c))
    # No wait for idle between these two: the sandbox's commands take their normal time, so
    # the open loop meets the closed loop's queue, as a daemon after a burst would.
    runs.append(await closed_loop(s.echo_sock, c, n, "re", "echo, closed loop", s.echo.pid))
    runs.append(
        await closed_loop(s.real_sock, c, n, "rd", "minted, closed loop", s.real.pid, closed_minted)
    )
    runs.append(await open_loop(s.echo_sock, c, n, rate, "qe", f"echo, {open_label}", s.echo.pid))
    runs.append(
        await open_loop(
            s.real_sock, c, n, rate, "qd", f"minted, {open_label}", s.real.pid, open_minted
        )
    )
    return runs, settled, floor


def _secrets_in(logged: bytes, runs: list[Run]) -> int:
    """Occurrences of a secret sent in ``logged``: the made-up signatures all start with
    ``sig-``; the minted signatures (64 hex digits) and ``multipleAccessId``s (UUIDs) are
    looked up among the log's words of those shapes."""
    minted = {secret for run in runs for secret in run.secrets}
    words = re.findall(
        rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{64}", logged
    )
    return logged.count(b"sig-") + sum(1 for word in words if word.decode() in minted)


def main(argv: list[str] | None = None) -> None:
    """Start the servers, measure, stop them, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent connections")
    parser.add_argument("--requests", type=int, default=5000, help="calls per mode and server")
    parser.add_argument("--rate", type=float, default=5000.0, help="open loop: offered calls/s")
    parser.add_argument(
        "--made-up-only",
        action="store_true",
        help="skip the daemon on a stand-alone sandbox with minted consents",
    )
    parser.add_argument(
        "--command-seconds",
        type=float,
        help="the stand-alone sandbox's command length (default its own, 8 s); one longer than "
        "the runs (3600) keeps the minted imports running, so those runs measure intake alone",
    )
    parser.add_argument("--echo-server", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--rpc-floor-server", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        asyncio.run(_echo_serve(args.echo_server))
        return
    if args.rpc_floor_server:
        asyncio.run(_rpc_floor_serve(args.rpc_floor_server))
        return
    stops: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as name, ExitStack() as logs:
        tmp = Path(name)
        (tmp / "real").mkdir()
        log = logs.enter_context((tmp / "daemon.log").open("wb"))
        s = Servers(
            daemon=start_daemon(tmp, log),
            echo=start_echo(tmp / "echo.sock"),
            floor=start_echo(tmp / "rpc.sock", "--rpc-floor-server"),
            daemon_sock=tmp / "aisd.sock",
            echo_sock=tmp / "echo.sock",
            floor_sock=tmp / "rpc.sock",
        )
        box = None
        try:
            if not args.made_up_only:
                box, s.sandbox_url = start_sandbox(
                    tmp, logs.enter_context((tmp / "sandbox.log").open("wb")), args.command_seconds
                )
                real_log = logs.enter_context((tmp / "real" / "daemon.log").open("wb"))
                s.real = start_daemon(tmp / "real", real_log, s.sandbox_url)
                s.real_sock = tmp / "real" / "aisd.sock"
            runs, settled, floor = asyncio.run(measure(args, s))
        finally:
            stops.append(("daemon", *stop(s.daemon)))
            if s.real is not None:
                stops.append(("minted daemon", *stop(s.real)))
            for process in (s.echo, s.floor, box):
                if process is not None:
                    stop(process)
        logged = (tmp / "daemon.log").read_bytes()
        real_logged = b"" if s.real is None else (tmp / "real" / "daemon.log").read_bytes()
        missing = missing_from(tmp / "aisd.db", _acknowledged(runs, "daemon"))
        if s.real is not None:
            missing += missing_from(tmp / "real" / "aisd.db", _acknowledged(runs, "minted"))
    print(
        f"{args.clients} clients, {args.requests} consent.submit per run, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    for run in runs:
        print(run.line())
        if run.errors:
            print(f"  errors by code: {dict(run.errors)}")
    echo_closed, floor_closed, daemon_closed, echo_open, daemon_open = runs[:5]
    print(f"the daemon's imports of the closed-loop run ended {settled:.1f} s after it")
    print(floor.line())
    _ratios("daemon/echo", daemon_closed, echo_closed, daemon_open, echo_open)
    if len(runs) > 5:
        _ratios("minted/echo", runs[6], runs[5], runs[8], runs[7])
    print(
        f"rpc floor/echo: closed-loop throughput {floor_closed.rate / echo_closed.rate:.2f}; "
        f"server cpu/call {floor_closed.server_cpu / echo_closed.server_cpu:.1f}x the echo's"
    )
    print(f"acknowledged consents missing from the databases after the stop: {missing}")
    lines = logged.count(b"\n") + real_logged.count(b"\n")
    print(f"daemon log lines: {lines}, secrets in them: {_secrets_in(logged + real_logged, runs)}")
    for label, code, drain in stops:
        print(f"{label} stop (SIGTERM): exit code {code} after {drain:.2f} s")


def _acknowledged(runs: list[Run], label: str) -> list[str]:
    return [session for run in runs if run.label.startswith(label) for session in run.acknowledged]


def _ratios(label: str, closed: Run, echo_closed: Run, opened: Run, echo_open: Run) -> None:
    print(
        f"{label}: closed-loop throughput {closed.rate / echo_closed.rate:.2f}; "
        f"open-loop p99 {_p99(opened) / _p99(echo_open):.1f}x the echo's; "
        f"server cpu/call {closed.server_cpu / echo_closed.server_cpu:.1f}x the echo's"
    )


def _p99(run: Run) -> float:
    return percentile(sorted(run.latencies), 99)


if __name__ == "__main__":
    main()
