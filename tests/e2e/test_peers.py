"""SO_PEERCRED authorisation with real users: the daemon runs as root, clients do not.

Needs root (to switch users with ``setpriv``); the socket-mode check runs for anyone.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aisd.client import Client, DaemonUnavailable

pytestmark = pytest.mark.slow

START_DEADLINE = 30.0
STOP_DEADLINE = 15.0
PEER_NOT_ALLOWED = -32001
# An unprivileged client identity; the kernel needs no /etc/passwd entry for it.
CLIENT_UID = 4321
CLIENT_GID = 4321
# A group id no test setting names.
UNLISTED_GID = 4242
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")

# Sends one daemon.status line with the standard library only and prints the reply line.
_CLIENT = """
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.settimeout(20)
    sock.connect(sys.argv[1])
    sock.sendall(b'{"jsonrpc":"2.0","id":7,"method":"daemon.status"}\\n')
    reply = b""
    while not reply.endswith(b"\\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
sys.stdout.write(reply.decode())
"""


@dataclass
class Daemon:
    """A ``aisd run --sandbox`` process and the files it writes."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    socket_path: Path

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines whose ``event`` is ``event``."""
        found = []
        for raw in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == event:
                found.append(line)
        return found


def _start(work: Path, socket_dir: Path, **extra: str) -> Daemon:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SYSTEMD_VARIABLES and not k.startswith("AISD_")
    }
    socket_path = socket_dir / "aisd.sock"
    env.update(
        AISD_DB_PATH=str(work / "aisd.db"),
        AISD_SOCKET_PATH=str(socket_path),
        AISD_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    log_path = work / "daemon.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisd", "run", "--sandbox"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(proc, log_path, socket_path)
    end = time.monotonic() + START_DEADLINE
    while True:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode}: {log_path.read_text()[-4000:]}")
        try:
            Client(socket_path, timeout=2.0).status()
        except DaemonUnavailable:
            if time.monotonic() > end:
                pytest.fail("the daemon's socket did not answer in time")
            time.sleep(0.05)
        else:
            return daemon


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test starts: stopped with SIGTERM at teardown (must exit 0), killed if stuck."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            code = daemon.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()
            pytest.fail("daemon ignored SIGTERM")
        assert code == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that other users may traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aisd-peer-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _call_as(socket_path: Path, uid: int, gid: int, *groups: int) -> dict[str, Any]:
    """Call ``daemon.status`` as ``uid``:``gid`` with exactly ``groups`` as supplements."""
    supplements = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", *supplements]
    done = subprocess.run(
        [*argv, sys.executable, "-c", _CLIENT, str(socket_path)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@needs_root
def test_peer_credentials_decide_who_is_served(
    tmp_path: Path, open_dir: Path, daemons: list[Daemon]
) -> None:
    allowed_gid = grp.getgrnam("users").gr_gid
    daemon = _start(
        tmp_path,
        open_dir,
        AISD_ALLOWED_UIDS="0",
        AISD_ALLOWED_GIDS="users",
        AISD_SOCKET_MODE="0666",
    )
    daemons.append(daemon)
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o666

    refused = _call_as(daemon.socket_path, CLIENT_UID, CLIENT_GID)
    assert refused["id"] == 7
    assert refused["error"]["code"] == PEER_NOT_ALLOWED
    assert "result" not in refused
    assert [line["uid"] for line in daemon.logged("rpc.peer_refused")] == [CLIENT_UID]

    served = _call_as(daemon.socket_path, CLIENT_UID, CLIENT_GID, allowed_gid)
    assert served["id"] == 7
    assert "error" not in served
    assert served["result"]["version"]

    primary = _call_as(daemon.socket_path, CLIENT_UID, allowed_gid)
    assert primary["result"]["version"]
    assert len(daemon.logged("rpc.peer_refused")) == 1

    unlisted = _call_as(daemon.socket_path, CLIENT_UID, CLIENT_GID, UNLISTED_GID)
    assert unlisted["error"]["code"] == PEER_NOT_ALLOWED

    # nobody is the kernel's overflow uid, which every unmapped user of a user namespace
    # shows up as: a group cannot vouch for it, only an explicit uid could.
    nobody = pwd.getpwnam("nobody").pw_uid
    overflow = _call_as(daemon.socket_path, nobody, grp.getgrnam("nogroup").gr_gid, allowed_gid)
    assert overflow["error"]["code"] == PEER_NOT_ALLOWED
    refusals = daemon.logged("rpc.peer_refused")
    assert [line["uid"] for line in refusals] == [CLIENT_UID, CLIENT_UID, nobody]
    assert all(line["pid"] > 0 for line in refusals)


def test_socket_file_has_the_default_mode(
    tmp_path: Path, open_dir: Path, daemons: list[Daemon]
) -> None:
    daemon = _start(tmp_path, open_dir)
    daemons.append(daemon)
    info = daemon.socket_path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
