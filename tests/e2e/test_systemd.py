"""The real daemon process under the systemd service protocol.

Each test starts ``python -m aisd run`` as systemd would (a ``NOTIFY_SOCKET``, a watchdog, a
passed listening socket) and reads what it tells systemd and its JSON log. Deadlines are
generous: a loaded 2-core machine must not make these tests flake.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from aisd.client import Client, DaemonUnavailable
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxConfig, serve

pytestmark = pytest.mark.slow

# Ceilings for things that take well under a second on an idle machine.
START_DEADLINE = 30.0
STOP_DEADLINE = 15.0
# Whatever systemd may have set for the shell running the tests must not leak into the daemon.
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a daemon whose database and socket live in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARIABLES}
    env = {k: v for k, v in env.items() if not k.startswith("AISD_")}
    env.update(
        AISD_DB_PATH=str(tmp_path / "aisd.db"),
        AISD_SOCKET_PATH=str(tmp_path / "aisd.sock"),
        AISD_LOG_FORMAT="json",
        AISD_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], bool], what: str, deadline: float = START_DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Daemon:
    """A daemon process started by a test, its stdout going to a JSON-lines file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    socket_path: Path

    @classmethod
    def start(
        cls, argv: list[str], env: Mapping[str, str], log_path: Path, socket_path: Path
    ) -> Daemon:
        """Start ``argv`` with stdout and stderr appended to ``log_path``."""
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        return cls(proc, log_path, socket_path)

    def client(self, timeout: float = 10.0) -> Client:
        """A socket client of this daemon."""
        return Client(self.socket_path, timeout=timeout)

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (other output, e.g. a traceback, is skipped)."""
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The log lines whose ``event`` is ``event``."""
        return [line for line in self.logs() if line.get("event") == event]

    def wait_serving(self) -> None:
        """Wait until ``daemon.status`` answers on the socket."""

        def answers() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}: {self.log_text()}")
            try:
                self.client(timeout=2.0).status()
            except DaemonUnavailable:
                return False
            return True

        wait_for(answers, "the daemon's socket")

    def terminate(self) -> int:
        """SIGTERM, then the exit code (killed and failed if it does not exit in time)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon ignored SIGTERM for {STOP_DEADLINE:.0f}s")

    def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        """The raw log, for failure messages."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


@dataclass
class NotifySocket:
    """A stand-in for systemd's notification socket: what the daemon sends, in order."""

    address: str
    sock: socket.socket
    received: list[tuple[float, str]] = field(default_factory=list)

    def drain(self, wait: float = 0.0) -> list[str]:
        """Read every datagram that arrives within ``wait`` seconds (none pending: return)."""
        fresh: list[str] = []
        end = time.monotonic() + wait
        while True:
            remaining = end - time.monotonic()
            if remaining > 0:
                self.sock.settimeout(remaining)
            else:
                self.sock.setblocking(False)
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, TimeoutError):
                return fresh
            message = data.decode("utf-8")
            self.received.append((time.monotonic(), message))
            fresh.append(message)

    def wait_for(self, wanted: Callable[[str], bool], what: str) -> str:
        """Read until a message satisfying ``wanted`` arrives, and return it."""
        end = time.monotonic() + START_DEADLINE
        while time.monotonic() < end:
            for message in self.drain(wait=0.2):
                if wanted(message):
                    return message
        pytest.fail(f"no {what} from the daemon within {START_DEADLINE:.0f}s")

    def messages(self) -> list[str]:
        """Everything received so far, in order."""
        return [message for _, message in self.received]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A datagram Unix socket the test reads, to pass as ``NOTIFY_SOCKET``."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield NotifySocket(str(path), sock)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test starts; any still running at teardown are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start_sandbox_daemon(
    tmp_path: Path, daemons: list[Daemon], env: Mapping[str, str], *, sandbox: bool = True
) -> Daemon:
    """``aisd run [--sandbox]`` with ``env``, logging to ``tmp_path/daemon.log``."""
    argv = [sys.executable, "-m", "aisd", "run"] + (["--sandbox"] if sandbox else [])
    daemon = Daemon.start(argv, env, tmp_path / "daemon.log", Path(env["AISD_SOCKET_PATH"]))
    daemons.append(daemon)
    return daemon


def submit_demo(client: Client, owner: str) -> dict[str, Any]:
    """Mint a consent in the embedded sandbox and submit it, as ``aisd submit --demo`` does."""
    minted = client.call("sandbox.mint", {"ownerExternalId": owner})
    return client.submit_consent(
        minted["ownerExternalId"],
        minted["sessionId"],
        minted["sessionIdSignature"],
        multiple_access_id=minted["multipleAccessId"],
        target=minted["target"],
    )


def test_notify_protocol_ready_status_watchdog_stopping(
    tmp_path: Path, notify_socket: NotifySocket, daemons: list[Daemon]
) -> None:
    env = service_env(
        tmp_path,
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="2000000",
        AISD_PLANNER_TICK_SECONDS="1",
    )
    daemon = start_sandbox_daemon(tmp_path, daemons, env)

    ready = notify_socket.wait_for(lambda m: "READY=1" in m.splitlines(), "READY=1")
    # No retry: READY promises the socket already listens.
    status = daemon.client().status()
    assert notify_socket.messages()[0] == ready, "READY=1 must be the first message"
    assert status["version"] in ready
    assert sum(status["tokens"].values()) == 0

    submitted = submit_demo(daemon.client(), "owner-notify")
    assert submitted["tokenId"]
    live = notify_socket.wait_for(lambda m: "active=1" in m, "STATUS with the new token")
    assert live.startswith("STATUS=tokens active=1,")

    # Watch the keep-alives over a few seconds: half of WATCHDOG_USEC is one second.
    notify_socket.drain(wait=5.0)
    pings = [at for at, message in notify_socket.received if message == "WATCHDOG=1"]
    assert len(pings) >= 3, notify_socket.messages()
    mean_gap = (pings[-1] - pings[0]) / (len(pings) - 1)
    assert 0.5 <= mean_gap <= 2.0, f"pings every {mean_gap:.2f}s, expected about 1s"

    assert daemon.terminate() == 0
    after_stop = notify_socket.drain(wait=0.5)
    assert "STOPPING=1" in after_stop
    assert all(m == "WATCHDOG=1" for m in after_stop[after_stop.index("STOPPING=1") + 1 :])
    messages = notify_socket.messages()
    assert sum("READY=1" in m.splitlines() for m in messages) == 1
    assert messages.index("STOPPING=1") > messages.index(live)
    assert daemon.logged("daemon.stopped")


def test_notify_reaches_an_abstract_socket(tmp_path: Path, daemons: list[Daemon]) -> None:
    # systemd spells an abstract-namespace NOTIFY_SOCKET with a leading "@" for the NUL byte.
    name = f"aisd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notify = NotifySocket("@" + name, sock)
        env = service_env(tmp_path, NOTIFY_SOCKET=notify.address)
        daemon = start_sandbox_daemon(tmp_path, daemons, env)
        notify.wait_for(lambda m: m.startswith("READY=1\n"), "READY=1")
        assert daemon.terminate() == 0
        assert "STOPPING=1" in notify.drain(wait=0.5)
    assert not daemon.logged("systemd.notify_failed")


def test_watchdog_for_another_pid_is_not_pinged(
    tmp_path: Path, notify_socket: NotifySocket, daemons: list[Daemon]
) -> None:
    # systemd sets WATCHDOG_PID to the main process; a child that inherited it must stay quiet.
    env = service_env(
        tmp_path,
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="1000000",
        WATCHDOG_PID=str(os.getpid()),
        AISD_PLANNER_TICK_SECONDS="1",
    )
    daemon = start_sandbox_daemon(tmp_path, daemons, env)
    notify_socket.wait_for(lambda m: m.startswith("READY=1"), "READY=1")
    notify_socket.drain(wait=2.5)
    assert "WATCHDOG=1" not in notify_socket.messages()
    assert daemon.terminate() == 0


def test_watchdog_stops_while_the_database_is_write_locked(
    tmp_path: Path, notify_socket: NotifySocket, daemons: list[Daemon]
) -> None:
    env = service_env(
        tmp_path,
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="2000000",
        AISD_PLANNER_TICK_SECONDS="1",
    )
    daemon = start_sandbox_daemon(tmp_path, daemons, env)
    notify_socket.wait_for(lambda m: m == "WATCHDOG=1", "a first WATCHDOG=1")

    # WAL readers are not blocked by this, so the daemon's ping still reads; but every planner
    # tick opens a write transaction, waits out busy_timeout and fails: the planner goes stale.
    wedge = sqlite3.connect(tmp_path / "aisd.db", timeout=30, isolation_level=None)
    try:
        wedge.execute("BEGIN EXCLUSIVE")
        wait_for(lambda: bool(daemon.logged("watchdog.skipped")), "watchdog.skipped")
        # Datagrams are queued when sent, so any ping sent before the skip is already here.
        notify_socket.drain()
        quiet = notify_socket.drain(wait=3.0)
        assert "WATCHDOG=1" not in quiet
        skipped = daemon.logged("watchdog.skipped")
        assert len(skipped) >= 2
        assert {line["reason"] for line in skipped} == {"planner"}
        # The watchdog calls the planner stale while its tick may still wait out busy_timeout:
        # the failure is logged when that wait ends, still under the lock.
        wait_for(lambda: bool(daemon.logged("planner.tick_failed")), "planner.tick_failed")
        # The socket still answers: being unhealthy is the watchdog's business, not the peers'.
        assert daemon.client(timeout=15.0).status()["version"]
    finally:
        wedge.rollback()
        wedge.close()

    notify_socket.wait_for(lambda m: m == "WATCHDOG=1", "WATCHDOG=1 after the lock is released")
    assert daemon.terminate() == 0


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate"
)
def test_socket_activation_serves_the_passed_socket_and_leaves_it(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    env = service_env(tmp_path, AISD_SOCKET_PATH=str(tmp_path / "unused.sock"))
    listen = tmp_path / "activated.sock"
    # systemd-socket-activate passes only what --setenv names, and execs the daemon in place
    # on the first connection, so LISTEN_PID is the daemon's own pid.
    passed = [f"--setenv={name}={env[name]}" for name in sorted(env) if name.startswith("AISD_")]
    passed += [f"--setenv={name}" for name in ("PATH", "HOME", "PYTHONUNBUFFERED") if name in env]
    argv = ["systemd-socket-activate", "-l", str(listen), *passed]
    argv += [sys.executable, "-m", "aisd", "run", "--sandbox"]
    daemon = Daemon.start(argv, env, tmp_path / "daemon.log", listen)
    daemons.append(daemon)

    wait_for(listen.exists, "systemd-socket-activate's socket")
    time.sleep(0.5)
    assert not (tmp_path / "aisd.db").exists(), "the daemon must not start before a client"

    # The first connection queues in the backlog until the daemon accepts it.
    status = daemon.client(timeout=START_DEADLINE).status()
    assert status["version"]
    assert (tmp_path / "aisd.db").exists()
    ready = daemon.logged("daemon.ready")
    assert len(ready) == 1
    assert ready[0]["socketActivated"] is True
    assert not (tmp_path / "unused.sock").exists()

    assert daemon.terminate() == 0
    assert listen.exists(), "a socket passed by systemd belongs to the .socket unit"
    assert daemon.logged("daemon.stopped")


@dataclass
class HttpSandbox:
    """The sandbox Kontomatik API over real HTTP, run in a thread of the test process."""

    sandbox: Sandbox
    url: str
    call: Callable[..., Any]


@pytest.fixture
def http_sandbox() -> Iterator[HttpSandbox]:
    """A sandbox whose imports run long enough to be interrupted."""
    box = Sandbox(SandboxConfig(command_seconds=8.0))
    with start_blocking_portal() as portal:
        future, port = portal.start_task(serve, box)
        try:
            yield HttpSandbox(box, f"http://127.0.0.1:{port}", portal.call)
        finally:
            future.cancel()


def test_sigterm_mid_import_resumes_the_same_command(
    tmp_path: Path, daemons: list[Daemon], http_sandbox: HttpSandbox
) -> None:
    env = service_env(
        tmp_path,
        AISD_API_URL=http_sandbox.url,
        AISD_API_KEY=DEFAULT_API_KEY,
        AISD_POLL_MIN_SECONDS="2",
        AISD_POLL_MAX_SECONDS="2",
    )
    first = start_sandbox_daemon(tmp_path, daemons, env, sandbox=False)
    first.wait_serving()
    minted = http_sandbox.call(http_sandbox.sandbox.mint_consent, "owner-sigterm")
    submitted = first.client().submit_consent(
        minted.owner_external_id,
        minted.session_id,
        minted.signature,
        multiple_access_id=minted.multiple_access_id,
        target=minted.target,
    )
    import_id = submitted["importId"]

    def running() -> bool:
        found = first.client().get_import(import_id)
        return bool(found["state"] == "running" and found["commandId"])

    wait_for(running, "the import to run")
    command_id = first.client().get_import(import_id)["commandId"]

    stopped_at = time.monotonic()
    assert first.terminate() == 0
    assert time.monotonic() - stopped_at < 5.0, "the drain must not wait for the import"
    assert first.logged("daemon.stopped")

    second = start_sandbox_daemon(tmp_path, daemons, env, sandbox=False)
    second.wait_serving()
    interrupted = second.client().get_import(import_id)
    assert interrupted["commandId"] == command_id
    assert interrupted["state"] in {"running", "successful"}

    wait_for(
        lambda: second.client().get_import(import_id)["state"] in {"successful", "failed"},
        "the resumed import to finish",
    )
    done = second.client().get_import(import_id)
    assert done["state"] == "successful", done["error"]
    assert done["commandId"] == command_id
    assert done["accounts"] == 2
    stats = http_sandbox.sandbox.stats
    assert stats.imports_by_session == {minted.session_id: 1}
    assert stats.commands_created == 1
    assert [served.command_id for served in stats.served] == [command_id]
    assert second.terminate() == 0
