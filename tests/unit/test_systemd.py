"""The systemd protocol: notify datagrams, socket activation and the watchdog interval."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisd import systemd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="aisd-sd-") as name:
        yield Path(name)


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    return sock.recv(4096)


def test_notify_without_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_a_datagram_to_an_absolute_path(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    address = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert systemd.notify("READY=1\nSTATUS=serving") is True
        assert _receive(manager) == b"READY=1\nSTATUS=serving"


def test_notify_sends_to_an_abstract_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"aisd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1") is True
        assert _receive(manager) == b"WATCHDOG=1"


def test_notify_failures_return_false(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody-listens"))
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "{pid}"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: float | None
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(pid=os.getpid()))
    assert systemd.watchdog_interval() == expected


def test_watchdog_interval_refuses_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        systemd.watchdog_interval()


def test_listen_fds_ignores_variables_meant_for_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "aisd.socket")
    assert systemd.listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


# Runs in a child so that fd 3 can be taken over without disturbing pytest's own files.
_ACTIVATED_CHILD = r"""
import fcntl, json, os, socket, sys
import anyio

from aisd import systemd
from aisd.rpc import ListenError, RpcServer, open_listener

mode, path = sys.argv[1], sys.argv[2]
kind = socket.SOCK_DGRAM if mode == "dgram" else socket.SOCK_STREAM
passed = socket.socket(socket.AF_UNIX, kind)
passed.bind(path)
if kind == socket.SOCK_STREAM:
    passed.listen()
fd = passed.detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)  # as systemd hands it over: listen_fds must set CLOEXEC
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="aisd.socket")

if mode == "fds":
    (sock,) = systemd.listen_fds()
    print(json.dumps({
        "fileno": sock.fileno(),
        "family": int(sock.family),
        "type": int(sock.type),
        "cloexec": bool(fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
        "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }))
    sys.exit(0)


async def ping(params, peer):
    return "pong"


async def main() -> dict[str, object]:
    try:
        listener, activated = await open_listener(path + ".unused", 0o600)
    except ListenError as exc:
        return {"error": str(exc)}
    server = RpcServer({"ping": ping}, allowed_uids=frozenset({os.getuid()}),
                       allowed_gids=frozenset())
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve, listener)
        async with await anyio.connect_unix(path) as client:
            await client.send(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
            reply = json.loads(await client.receive())
        while server.active_connections:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return {"activated": activated, "reply": reply, "still_there": os.path.exists(path),
            "created_own": os.path.exists(path + ".unused")}

print(json.dumps(anyio.run(main)))
"""


def _run_child(mode: str, path: Path) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LISTEN_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _ACTIVATED_CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_listen_fds_takes_fd_3(short_dir: Path) -> None:
    assert _run_child("fds", short_dir / "a.sock") == {
        "fileno": 3,
        "family": int(socket.AF_UNIX),
        "type": int(socket.SOCK_STREAM),
        "cloexec": True,
        "env_left": [],
    }


def test_open_listener_serves_the_socket_systemd_passed(short_dir: Path) -> None:
    assert _run_child("stream", short_dir / "b.sock") == {
        "activated": True,
        "reply": {"jsonrpc": "2.0", "id": 1, "result": "pong"},
        "still_there": True,
        "created_own": False,
    }


def test_open_listener_refuses_a_passed_datagram_socket(short_dir: Path) -> None:
    assert _run_child("dgram", short_dir / "c.sock") == {
        "error": "the socket from systemd is not a Unix stream socket (fd 3)"
    }
