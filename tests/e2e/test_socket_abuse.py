"""Hostile and broken peers on the real daemon's socket: each gets the right JSON-RPC error or
a closed connection, and the daemon keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aisd.client import RpcError
from tests.e2e.conftest import (
    DaemonProcess,
    SandboxServer,
    daemon_environment,
    daemon_process,
    serving_sandbox,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

IDLE_TIMEOUT_SECONDS = 1.5
MAX_CONNECTIONS = 4


class RawPeer:
    """A bare Unix-socket peer that writes whatever bytes it likes."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10.0)
        self.sock.connect(path)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, request_id: int | str, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode() + b"\n")

    def line(self) -> bytes:
        """The next line the daemon sent, without its newline."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the daemon closed the connection instead of answering"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def response(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.line())
        assert value["jsonrpc"] == "2.0"
        return value

    def error(self) -> dict[str, Any]:
        """The next response, which must be an error; its ``id`` is folded in."""
        response = self.response()
        assert "result" not in response, response
        return {**response["error"], "id": response["id"]}

    def closed_by_daemon(self) -> bool:
        """Whether the daemon closed its end (waits up to the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def sandbox_module() -> Iterator[SandboxServer]:
    """One sandbox for the module: every abuse hits the same daemon."""
    with serving_sandbox() as server:
        yield server


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, sandbox_module: SandboxServer
) -> Iterator[DaemonProcess]:
    """One daemon for the module; at the end, every submit made between the abuses imported."""
    directory = tmp_path_factory.mktemp("abuse")
    with daemon_process(directory, daemon_environment(directory, sandbox_module)) as daemon:
        daemon.start(
            AISD_SOCKET_IDLE_TIMEOUT_SECONDS=str(IDLE_TIMEOUT_SECONDS),
            AISD_SOCKET_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        )
        yield daemon
        imports = daemon.client.list_imports(limit=1000)["imports"]
        views = wait_final(daemon.client, [i["importId"] for i in imports], timeout=30)
        assert [v["state"] for v in views] == ["successful"] * len(views), views
        assert daemon.alive


@pytest.fixture
def peer(running: DaemonProcess) -> Iterator[RawPeer]:
    connection = RawPeer(str(running.client.socket_path))
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def _still_serving(running: DaemonProcess, sandbox_module: SandboxServer) -> Iterator[None]:
    """After each abuse the daemon is alive, answers and takes a consent (imported by the end
    of the module, see ``running``)."""
    yield
    assert running.alive
    assert running.client.status()["version"]
    consent = sandbox_module.mint("after-abuse")
    ids = running.client.submit_consent(
        consent.owner_external_id, consent.session_id, consent.signature
    )
    assert running.client.get_import(ids["importId"])["ownerExternalId"] == "after-abuse"


def _assert_usable(peer: RawPeer) -> None:
    peer.request(99, "daemon.status")
    response = peer.response()
    assert response["id"] == 99
    assert "version" in response["result"]


def test_garbage_bytes_get_a_parse_error_and_the_connection_stays_usable(peer: RawPeer) -> None:
    peer.send(b"\x00\xff\xfe\x80 not json at all\n")
    error = peer.error()
    assert (error["code"], error["id"]) == (-32700, None)
    _assert_usable(peer)


def test_invalid_json_gets_a_parse_error(peer: RawPeer) -> None:
    peer.send(b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status"\n')
    assert peer.error()["code"] == -32700
    peer.send(b'{"jsonrpc": "2.0", "id": NaN, "method": "daemon.status"}\n')
    assert peer.error()["code"] == -32700
    _assert_usable(peer)


def test_a_one_mebibyte_line_is_refused_and_the_next_line_is_served(peer: RawPeer) -> None:
    padding = "x" * (1024 * 1024)
    peer.request(5, "daemon.status", {"padding": padding})
    error = peer.error()
    assert error["code"] == -32600
    assert "too long" in error["message"]
    _assert_usable(peer)


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        (
            "consent.submit",
            {"ownerExternalId": "o", "sessionId": 12, "sessionIdSignature": "s"},
            "sessionId",
        ),
        ("consent.submit", {"ownerExternalId": "o", "sessionId": "1"}, "sessionIdSignature"),
        ("import.get", {"importId": ["a"]}, "importId"),
        ("events.list", {"after": "SECRET-VALUE"}, "after"),
        ("events.list", {"limit": True}, "limit"),
        ("owner.data", {"ownerExternalId": "o", "unexpected": 1}, "unexpected"),
    ],
)
def test_wrong_params_name_the_field_and_never_echo_the_value(
    peer: RawPeer, method: str, params: dict[str, Any], field: str
) -> None:
    peer.request(7, method, params)
    error = peer.error()
    assert (error["code"], error["id"]) == (-32602, 7)
    assert error["data"]["field"] == field
    assert field in error["message"]
    assert "SECRET-VALUE" not in json.dumps(error)
    _assert_usable(peer)


def test_params_that_are_not_an_object_are_invalid(peer: RawPeer) -> None:
    peer.request(8, "daemon.status", ["positional"])
    assert peer.error()["code"] == -32602
    _assert_usable(peer)


def test_an_unknown_method_is_not_found(peer: RawPeer) -> None:
    peer.request("abc", "daemon.shutdown")
    assert peer.error() == {"code": -32601, "message": "method not found", "id": "abc"}
    _assert_usable(peer)


def test_a_batch_is_answered_once_with_an_array(peer: RawPeer) -> None:
    one = {"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}
    peer.send(json.dumps([one, {**one, "id": 2}]).encode() + b"\n")
    answers = json.loads(peer.line())
    assert [answer["id"] for answer in answers] == [1, 2]
    assert all("version" in answer["result"] for answer in answers)
    # The next answer is to the next request, not a late part of the batch.
    _assert_usable(peer)


def test_a_notification_gets_no_answer(peer: RawPeer) -> None:
    peer.send(b'{"jsonrpc": "2.0", "method": "daemon.status"}\n')
    _assert_usable(peer)


def test_a_silent_peer_is_closed_and_does_not_block_others(running: DaemonProcess) -> None:
    silent = RawPeer(str(running.client.socket_path))
    half = RawPeer(str(running.client.socket_path))
    try:
        half.send(b'{"jsonrpc": "2.0", "id": 1, "meth')
        began = time.monotonic()
        assert running.client.status()["version"]
        assert silent.closed_by_daemon()
        assert half.closed_by_daemon()
        assert time.monotonic() - began < IDLE_TIMEOUT_SECONDS + 3
    finally:
        silent.close()
        half.close()


def test_connections_over_the_limit_are_told_busy(running: DaemonProcess) -> None:
    path = str(running.client.socket_path)
    held = [RawPeer(path) for _ in range(MAX_CONNECTIONS)]
    try:
        # Each held connection is being served once it answers a request.
        for connection in held:
            _assert_usable(connection)
        extra = RawPeer(path)
        try:
            assert extra.error()["code"] == -32029
            assert extra.closed_by_daemon()
        finally:
            extra.close()
    finally:
        for connection in held:
            connection.close()

    # The held slots come back once the daemon has read each connection's end.
    def served() -> bool | None:
        try:
            running.client.status()
        except RpcError as exc:
            if exc.code != -32029:
                raise
            return None
        return True

    assert wait_for(served, timeout=5, interval=0.02, what="a slot after the held ones closed")


def test_a_peer_that_hangs_up_mid_request_harms_nothing(running: DaemonProcess) -> None:
    sent = 0
    for _ in range(20):
        quitter = RawPeer(str(running.client.socket_path))
        try:
            quitter.request(1, "events.list", {"after": 0})
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            # Accepted while the slots of the quitters before it were not yet free: told busy
            # and closed before it could write (slots free as the daemon reads each end).
            pass
        finally:
            quitter.close()
    assert sent > 0

    # Each hung-up connection holds its slot only until its answer fails to send.
    def answered() -> int | None:
        try:
            running.client.call("import.get", {"importId": "imp_does_not_exist"})
        except RpcError as exc:
            return None if exc.code == -32029 else exc.code
        return 0

    assert wait_for(answered, timeout=5, interval=0.05, what="a free connection slot") == -32004
