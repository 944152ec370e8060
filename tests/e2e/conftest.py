"""End-to-end harness: the real daemon process, its real socket, the sandbox over real HTTP.

The sandbox runs in a background thread with its own event loop (an anyio blocking portal), so
tests are plain synchronous code: they drive the daemon through :class:`aisd.client.Client`,
signal its process, and read or change the sandbox through :meth:`SandboxServer.call`, which
runs in the sandbox's loop and so never races a request in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from aisd.client import Client, DaemonUnavailable
from aisd.kontomatik._models import Account, CreditCard
from aisd.sandbox import MintedConsent, Sandbox, SandboxConfig, SandboxStats, serve

T = TypeVar("T")

API_KEY = "e2e-sandbox-key"
START_DEADLINE_SECONDS = 20.0
STOP_DEADLINE_SECONDS = 10.0
# Short commands keep an import at about two polls: the suite must stay well under two minutes.
COMMAND_SECONDS = 1.0
POLL_MIN_SECONDS = 2.0
POLL_MAX_SECONDS = 3.0

# What identifies a transaction for comparisons: the facts both sides state verbatim.
TxFacts = tuple[str, str | None, Decimal, str, str | None]


class OffsetClock:
    """The sandbox's clock: real UTC time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class SandboxServer:
    """A sandbox served over HTTP on 127.0.0.1 from its own thread.

    Attributes:
        sandbox: the sandbox itself; touch it only through :meth:`call`.
        clock: the sandbox's clock; move it with :meth:`advance`.
        port: the bound port.
    """

    sandbox: Sandbox
    clock: OffsetClock
    port: int
    portal: BlockingPortal

    @property
    def url(self) -> str:
        """The base URL the daemon is given as ``AISD_API_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` in the sandbox's event loop thread and return its value."""
        return self.portal.call(func)

    def mint(self, owner_external_id: str, **kwargs: Any) -> MintedConsent:
        """A fresh consent, as :meth:`Sandbox.mint_consent` makes it."""
        return self.call(partial(self.sandbox.mint_consent, owner_external_id, **kwargs))

    def configure(self, **changes: Any) -> None:
        """Replace fields of the sandbox's config."""

        def apply() -> None:
            self.sandbox.config = replace(self.sandbox.config, **changes)

        self.call(apply)

    def advance(self, delta: timedelta) -> None:
        """Move the sandbox's clock forward by ``delta``."""

        def apply() -> None:
            self.clock.offset += delta

        self.call(apply)

    def stats(self) -> SandboxStats:
        """A snapshot of the sandbox's counters, safe to read while it keeps serving."""

        def snapshot() -> SandboxStats:
            stats = self.sandbox.stats
            return SandboxStats(
                imports_by_session=dict(stats.imports_by_session),
                reuses_by_account={k: list(v) for k, v in stats.reuses_by_account.items()},
                max_running=stats.max_running,
                commands_created=stats.commands_created,
                served=list(stats.served),
                polls_by_command={k: list(v) for k, v in stats.polls_by_command.items()},
            )

        return self.call(snapshot)


class DaemonProcess:
    """``python -m aisd run`` as a child process, on a fixed database and socket.

    Args:
        directory: where the database, the socket and the log files live.
        env: the complete environment of the child.
    """

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.log_path = directory / "daemon.log"
        self.stderr_path = directory / "daemon.stderr"
        self.client = Client(env["AISD_SOCKET_PATH"], timeout=15.0)
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, **env: str) -> None:
        """Start the daemon (``env`` adds to or overrides its environment from now on) and
        return once ``daemon.status`` answers."""
        assert not self.alive, "the daemon is already running"
        self.env.update(env)
        with self.log_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "aisd", "run"],
                cwd=self.directory,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        probe = Client(self.client.socket_path, timeout=1.0)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"the daemon exited with {self._proc.returncode}: {self.stderr()}")
            try:
                probe.status()
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    pytest.fail(f"the daemon did not answer within {START_DEADLINE_SECONDS} s")
                time.sleep(0.05)
            else:
                return

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig``, wait for the exit and return the exit code."""
        assert self._proc is not None
        self._proc.send_signal(sig)
        return self._proc.wait(timeout=STOP_DEADLINE_SECONDS)

    def terminate(self) -> float:
        """SIGTERM; assert a clean exit (code 0) and return how long it took in seconds."""
        assert self._proc is not None
        began = time.monotonic()
        self._proc.send_signal(signal.SIGTERM)
        try:
            code = self._proc.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not stop within {STOP_DEADLINE_SECONDS} s of SIGTERM")
        assert code == 0, f"exit code {code} after SIGTERM: {self.stderr()}"
        return time.monotonic() - began

    def restart(self, **env: str) -> None:
        """SIGKILL if still running, then start again on the same database."""
        if self.alive:
            self.kill()
        self.start(**env)

    def stop_quietly(self) -> None:
        """Teardown: make sure no process outlives the test."""
        if self.alive:
            self.kill()

    def stderr(self) -> str:
        """What the daemon wrote to stderr (the tail)."""
        return (
            self.stderr_path.read_text(errors="replace")[-4000:]
            if self.stderr_path.exists()
            else ""
        )

    def log_lines(self) -> list[dict[str, Any]]:
        """Every complete stdout line of every run, each parsed as a JSON object.

        A line cut short by SIGKILL is the only one that may not parse; it ends without a
        newline and the next run's first line follows it, so it is split off there.
        """
        lines: list[dict[str, Any]] = []
        for raw in self.log_path.read_bytes().splitlines():
            text = raw.decode()
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                assert self.starts > 1, f"not a JSON log line: {text[:200]!r}"
                lines.append(_glued_tail(text))
        return lines


def _glued_tail(text: str) -> dict[str, Any]:
    """The whole JSON object that ends ``text``, after a killed run's partial line.

    Nested objects start with ``{"`` too, but only the outermost one parses to the end.
    """
    start = text.find('{"', 1)
    while start > 0:
        try:
            value: dict[str, Any] = json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find('{"', start + 1)
        else:
            return value
    raise AssertionError(f"not a JSON log line: {text[:200]!r}")


def all_events(client: Client) -> list[dict[str, Any]]:
    """The whole event feed, page by page."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.events(after=after, limit=1000)
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next"]


def wait_for(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = ""
) -> T:
    """Call ``check`` until it returns something other than ``None`` (or fail at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def wait_final(client: Client, import_ids: list[str], *, timeout: float) -> list[dict[str, Any]]:
    """Wait until every import is ``successful`` or ``failed``; their ``import.get`` views."""

    def check() -> list[dict[str, Any]] | None:
        views = [client.get_import(i) for i in import_ids]
        if all(v["state"] in ("successful", "failed") for v in views):
            return views
        return None

    return wait_for(check, timeout=timeout, what=f"{len(import_ids)} imports to end")


def served_facts(account: Account | CreditCard, since: date | None = None) -> list[TxFacts]:
    """An account's (or a card's) transactions as the sandbox served them (optionally from
    ``since`` on)."""
    return [
        (
            tx.transaction_on.isoformat(),
            tx.booked_on.isoformat() if tx.booked_on else None,
            tx.amount,
            tx.title,
            tx.status,
        )
        for tx in account.transactions
        if since is None or tx.transaction_on >= since
    ]


def stored_facts(account: dict[str, Any]) -> list[TxFacts]:
    """An ``owner.data`` account's transactions, in the same shape as :func:`served_facts`."""
    return [
        (
            tx["transactionOn"],
            tx["bookedOn"],
            Decimal(tx["currencyAmount"]),
            tx["title"],
            tx["status"],
        )
        for tx in account["transactions"]
    ]


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    """Event ids are 1, 2, 3, ... without a hole."""
    ids = [e["id"] for e in events]
    assert ids == list(range(1, len(ids) + 1)), f"event ids with gaps: {ids}"


@contextmanager
def serving_sandbox() -> Iterator[SandboxServer]:
    """A sandbox on 127.0.0.1, port picked by the OS, commands of ``COMMAND_SECONDS``."""
    clock = OffsetClock()
    box = Sandbox(SandboxConfig(api_key=API_KEY, command_seconds=COMMAND_SECONDS), clock=clock)
    with start_blocking_portal(backend="asyncio") as portal:
        future, port = portal.start_task(serve, box)
        try:
            yield SandboxServer(box, clock, port, portal)
        finally:
            future.cancel()


class Upstream(Protocol):
    """Where a daemon's API calls go: a sandbox in a thread here, or an ``aisd sandbox``
    process (:mod:`tests.e2e.sandbox_process`)."""

    @property
    def url(self) -> str:
        """The base URL, ``AISD_API_URL``."""
        ...


def daemon_environment(directory: Path, sandbox_server: Upstream) -> dict[str, str]:
    """The environment of a daemon keeping its files in ``directory`` and talking to
    ``sandbox_server``."""
    # Settings refuse unknown AISD_* names, and the runner's own must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
    for systemd_variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(systemd_variable, None)
    env.update(
        AISD_API_URL=sandbox_server.url,
        AISD_API_KEY=API_KEY,
        AISD_DB_PATH=str(directory / "aisd.db"),
        AISD_SOCKET_PATH=str(directory / "aisd.sock"),
        AISD_LOG_FORMAT="json",
        AISD_POLL_MIN_SECONDS=str(POLL_MIN_SECONDS),
        AISD_POLL_MAX_SECONDS=str(POLL_MAX_SECONDS),
    )
    return env


@contextmanager
def daemon_process(directory: Path, env: dict[str, str]) -> Iterator[DaemonProcess]:
    """A daemon process, not yet started; killed on exit if still running."""
    process = DaemonProcess(directory, env)
    try:
        yield process
    finally:
        process.stop_quietly()


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    """See :func:`serving_sandbox`."""
    with serving_sandbox() as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[DaemonProcess]:
    """A daemon process on ``tmp_path`` and ``sandbox_server``, not yet started."""
    with daemon_process(tmp_path, daemon_environment(tmp_path, sandbox_server)) as process:
        yield process
