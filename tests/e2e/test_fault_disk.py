"""The database's disk fills up under the running daemon, then space returns.

A full disk is played with ``RLIMIT_FSIZE`` set on the daemon by ``prlimit``: Python ignores
SIGXFSZ, so a write past the limit fails with EFBIG and SQLite reports an I/O error. The daemon's
stdout is a pipe, not a file, so its own log lines are not cut off by the same limit.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from structlog.testing import capture_logs

from aisd.client import Client, DaemonUnavailable, RpcError
from aisd.sandbox import MintedConsent
from aisd.store import StorageHealth
from aisd.store.sqlite._errors import storage_failure
from tests.e2e.conftest import (
    START_DEADLINE_SECONDS,
    SandboxServer,
    all_events,
    assert_gap_free,
    daemon_environment,
    wait_final,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)"),
]

STORAGE_UNAVAILABLE = -32030
# Room left above the database's current files: a few pages, less than one import's result.
HEADROOM_BYTES = 16 * 1024


class PipedDaemon:
    """``python -m aisd run`` whose stdout and stderr go to a pipe read by a thread."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.client = Client(env["AISD_SOCKET_PATH"], timeout=15.0)
        self.lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start and return once ``daemon.status`` answers."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "aisd", "run"],
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(target=self._drain, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        probe = Client(self.client.socket_path, timeout=1.0)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            assert self.alive, f"the daemon exited: {self.lines[-20:]}"
            try:
                probe.status()
            except DaemonUnavailable:
                assert time.monotonic() < deadline, "the daemon did not answer in time"
                time.sleep(0.05)
            else:
                return

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace"))

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose ``event`` is ``name``."""
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def stop(self) -> None:
        """SIGKILL if still running, and reap."""
        if self._proc is not None and self.alive:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


@pytest.fixture
def piped(tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[PipedDaemon]:
    """A daemon on ``tmp_path`` against ``sandbox_server``, started; killed afterwards."""
    env = daemon_environment(tmp_path, sandbox_server)
    env.update(AISD_POLL_MIN_SECONDS="2", AISD_POLL_MAX_SECONDS="2")
    daemon = PipedDaemon(tmp_path, env)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _submit(client: Client, consent: MintedConsent) -> str:
    ids: dict[str, Any] = client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )
    import_id: str = ids["importId"]
    return import_id


def _database_bytes(directory: Path) -> int:
    files = [directory / "aisd.db", directory / "aisd.db-wal"]
    return max(f.stat().st_size for f in files if f.exists())


def _prlimit(pid: int, fsize: str) -> None:
    subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={fsize}"], check=True)


def _served_requests(sandbox_server: SandboxServer) -> int:
    stats = sandbox_server.stats()
    polls = sum(len(times) for times in stats.polls_by_command.values())
    return polls + sum(stats.imports_by_session.values())


def test_a_full_disk_is_reported_refused_and_outlived(
    piped: PipedDaemon, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    client = piped.client
    accepted: dict[str, MintedConsent] = {}
    for n in range(3):
        consent = sandbox_server.mint(f"before-{n}")
        accepted[_submit(client, consent)] = consent
    wait_final(client, list(accepted), timeout=30)
    assert client.status()["storage"] == {"ok": True, "error": None, "since": None}

    # The soft limit only: raising a hard one back needs a privilege a container may lack.
    _prlimit(piped.pid, f"{_database_bytes(tmp_path) + HEADROOM_BYTES}:unlimited")
    refused: RpcError | None = None
    deadline = time.monotonic() + 40
    n = 0
    while refused is None:
        assert time.monotonic() < deadline, "the writes never failed under the size limit"
        consent = sandbox_server.mint(f"during-{n}")
        n += 1
        try:
            accepted[_submit(client, consent)] = consent
        except RpcError as exc:
            refused = exc
        time.sleep(0.2)
    # The caller learns that nothing was stored and that it may retry, with no secret echoed.
    assert refused.code == STORAGE_UNAVAILABLE
    assert refused.message == "storage unavailable: the consent was not stored"
    assert consent.signature not in json.dumps(refused.data)
    status = client.status()
    assert status["storage"]["ok"] is False
    assert status["storage"]["error"] == "disk I/O error"
    assert status["storage"]["since"] is not None
    cli = subprocess.run(
        [sys.executable, "-m", "aisd", "status"],
        env=piped.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "storage:  UNAVAILABLE (disk I/O error)" in cli.stdout

    # A while of failing: the pipeline backs off, and the log says so once, not per failure.
    requests_before = _served_requests(sandbox_server)
    for _ in range(10):
        with pytest.raises(RpcError) as again:
            client.submit_consent("retry", "1", "sig-retry-0001")
        assert again.value.code == STORAGE_UNAVAILABLE
        time.sleep(0.5)
    assert _served_requests(sandbox_server) - requests_before <= 16
    unavailable = piped.events("store.unavailable")
    assert 1 <= len(unavailable) <= 2
    assert unavailable[0]["level"] == "warning"
    assert unavailable[0]["reason"] == "disk I/O error"
    assert not piped.events("import.step_failed")
    assert not piped.events("rpc.handler_failed")
    assert piped.alive

    _prlimit(piped.pid, "unlimited:unlimited")

    def recovered() -> bool | None:
        return True if client.status()["storage"]["ok"] else None

    # The pipeline's back-off is at most 30 s; its next try finds the space.
    wait_for(recovered, timeout=45, what="the storage to be ok again")
    # The line is written before the status flips, but the reader thread may not have it yet.
    wait_for(lambda: piped.events("store.recovered") or None, timeout=10, what="store.recovered")
    assert piped.events("store.recovered")
    after = sandbox_server.mint("after")
    accepted[_submit(client, after)] = after
    views = wait_final(client, list(accepted), timeout=40)
    # Nothing accepted before or during the failure was lost; every import went through.
    assert [v["state"] for v in views] == ["successful"] * len(accepted)
    for import_id, consent in accepted.items():
        data = client.owner_data(consent.owner_external_id)
        assert data["accounts"], import_id
    assert_gap_free(all_events(client))
    assert client.status()["storage"]["ok"] is True
    assert os.path.exists(tmp_path / "aisd.db")


def test_storage_failures_are_told_apart_and_logged_once_a_minute() -> None:
    assert storage_failure(sqlite3.OperationalError("database or disk is full")) == (
        "database or disk is full"
    )
    assert storage_failure(sqlite3.OperationalError("attempt to write a readonly database")) == (
        "attempt to write a readonly database"
    )
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device")) == "ENOSPC"
    # A bug or a constraint is not waited out.
    assert storage_failure(sqlite3.OperationalError("no such table: tokens")) is None
    assert storage_failure(sqlite3.IntegrityError("UNIQUE constraint failed")) is None

    ticks = [0.0]
    health = StorageHealth(monotonic=lambda: ticks[0])
    with capture_logs() as logs:
        for second in range(150):
            ticks[0] = float(second)
            health.failed("database or disk is full")
        assert health.as_json()["ok"] is False
        health.succeeded()
        health.succeeded()
    unavailable = [e for e in logs if e["event"] == "store.unavailable"]
    # At 0 s, 60 s and 120 s: the repeats carry how many failures they stand for.
    assert [e["repeats"] for e in unavailable] == [0, 59, 59]
    assert {e["log_level"] for e in unavailable} == {"warning"}
    assert [e["event"] for e in logs].count("store.recovered") == 1
    assert health.as_json() == {"ok": True, "error": None, "since": None}
