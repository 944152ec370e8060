"""The sync and async socket clients against a tiny fake JSON-RPC daemon on a Unix socket."""

from __future__ import annotations

import json
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from aisd.client import (
    MAX_REQUEST_BYTES,
    AsyncClient,
    Client,
    DaemonUnavailable,
    ProtocolError,
    RpcError,
    decode_response,
    encode_request,
)

Result = Any | Callable[[dict[str, Any]], Any]


class FakeDaemon:
    """Answers JSON-RPC lines from canned results, errors or raw bytes; records every request.

    ``results[method]`` may be a callable of the params; ``raw[method]`` is sent verbatim instead
    of a response (``b""`` closes the connection without answering).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.results: dict[str, Result] = {}
        self.errors: dict[str, dict[str, Any]] = {}
        self.raw: dict[str, bytes] = {}
        daemon = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    request = json.loads(line)
                    daemon.requests.append(request)
                    reply = daemon.answer(request)
                    if reply is None:
                        return
                    try:
                        self.wfile.write(reply)
                    except BrokenPipeError:  # the client gave up (timeout tests)
                        return

        self._server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def answer(self, request: dict[str, Any]) -> bytes | None:
        method = request["method"]
        if method in self.raw:
            return self.raw[method] or None
        response: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method in self.errors:
            response["error"] = self.errors[method]
        elif method in self.results:
            result = self.results[method]
            response["result"] = result(request.get("params", {})) if callable(result) else result
        else:
            response["error"] = {"code": -32601, "message": "method not found"}
        return json.dumps(response).encode() + b"\n"

    def params(self, method: str) -> list[dict[str, Any]]:
        return [r.get("params", {}) for r in self.requests if r["method"] == method]

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths are limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="aisd-") as name:
        yield Path(name)


@pytest.fixture
def fake(short_dir: Path) -> Iterator[FakeDaemon]:
    with FakeDaemon(short_dir / "d.sock") as daemon:
        yield daemon


def test_encode_request_is_one_json_line() -> None:
    line = encode_request(7, "import.get", {"importId": "imp-1"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "import.get",
        "params": {"importId": "imp-1"},
    }
    assert "params" not in json.loads(encode_request(1, "daemon.status", None))


def test_encode_request_refuses_lines_over_64_kib() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_request(1, "consent.submit", {"x": "a" * MAX_REQUEST_BYTES})


def test_decode_response_checks_id_and_shape() -> None:
    assert decode_response(b'{"jsonrpc":"2.0","id":3,"result":{"a":1}}', 3) == {"a": 1}
    with pytest.raises(ProtocolError, match="expected 3"):
        decode_response(b'{"jsonrpc":"2.0","id":4,"result":1}', 3)
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_response(b"nope", 3)
    with pytest.raises(ProtocolError, match="neither"):
        decode_response(b'{"jsonrpc":"2.0","id":3}', 3)
    with pytest.raises(RpcError) as info:
        decode_response(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}', 3)
    assert info.value.code == -32700


def test_sync_convenience_methods_send_contract_params(fake: FakeDaemon) -> None:
    fake.results = {
        "consent.submit": {"importId": "imp-1", "tokenId": "tok-1"},
        "import.list": {"imports": []},
        "token.revoke": {"tokens": [{"tokenId": "tok-1", "state": "revoked"}]},
        "daemon.status": {"version": "0.1.0"},
    }
    client = Client(fake.path)
    ids = client.submit_consent(
        "owner-1",
        "sess-1",
        "sig-1",
        multiple_access_id="mai-1",
        refresh_until=date(2026, 12, 31),
        max_imports=3,
    )
    assert ids == {"importId": "imp-1", "tokenId": "tok-1"}
    assert fake.params("consent.submit") == [
        {
            "ownerExternalId": "owner-1",
            "sessionId": "sess-1",
            "sessionIdSignature": "sig-1",
            "multipleAccessId": "mai-1",
            "refreshUntil": "2026-12-31",
            "maxImports": 3,
        }
    ]
    assert client.list_imports(state="failed", limit=5) == {"imports": []}
    assert fake.params("import.list") == [{"state": "failed", "limit": 5}]
    assert client.revoke(owner_external_id="owner-1")["tokens"][0]["state"] == "revoked"
    assert fake.params("token.revoke") == [{"ownerExternalId": "owner-1"}]
    assert client.status() == {"version": "0.1.0"}
    assert "params" not in fake.requests[-1]


def test_sync_rpc_error_carries_code_message_and_data(fake: FakeDaemon) -> None:
    fake.errors["token.refresh"] = {
        "code": -32029,
        "message": "quota spent",
        "data": {"nextPossibleAt": "2026-11-28T10:00:00Z"},
    }
    with pytest.raises(RpcError) as info:
        Client(fake.path).refresh("tok-1")
    assert (info.value.code, info.value.message) == (-32029, "quota spent")
    assert info.value.data == {"nextPossibleAt": "2026-11-28T10:00:00Z"}


def test_sync_daemon_unavailable_names_the_path(short_dir: Path) -> None:
    path = short_dir / "missing.sock"
    with pytest.raises(DaemonUnavailable, match=str(path)):
        Client(path).status()


def test_sync_connection_closed_without_answer(fake: FakeDaemon) -> None:
    fake.raw["daemon.status"] = b""
    with pytest.raises(DaemonUnavailable, match="without answering"):
        Client(fake.path).status()


def test_sync_timeout_is_daemon_unavailable(fake: FakeDaemon) -> None:
    fake.results["daemon.status"] = lambda _: time.sleep(0.5)
    with pytest.raises(DaemonUnavailable, match="no answer in time"):
        Client(fake.path, timeout=0.05).status()


def test_sync_reply_split_across_reads_and_large(fake: FakeDaemon) -> None:
    big = {"ownerExternalId": "o", "accounts": [{"iban": "PL" + "1" * 26, "pad": "x" * 300_000}]}
    fake.results["owner.data"] = big
    assert Client(fake.path).owner_data("o") == big


def test_sync_malformed_reply_is_protocol_error(fake: FakeDaemon) -> None:
    fake.raw["daemon.status"] = b"<html>\n"
    with pytest.raises(ProtocolError):
        Client(fake.path).status()


@pytest.mark.anyio
async def test_async_convenience_methods(fake: FakeDaemon) -> None:
    fake.results = {
        "consent.submit": {"importId": "imp-2", "tokenId": None},
        "events.list": lambda p: {"events": [{"id": p["after"] + 1}], "next": p["after"] + 1},
        "data.changes": {"added": [], "modified": [], "removed": [], "cursor": "c2"},
    }
    client = AsyncClient(fake.path)
    assert await client.submit_consent("o", "s", "sig") == {"importId": "imp-2", "tokenId": None}
    assert fake.params("consent.submit") == [
        {"ownerExternalId": "o", "sessionId": "s", "sessionIdSignature": "sig"}
    ]
    assert await client.events(after=41, limit=10) == {"events": [{"id": 42}], "next": 42}
    assert fake.params("events.list") == [{"after": 41, "limit": 10}]
    assert (await client.changes("c1", owner_external_id="o"))["cursor"] == "c2"
    assert fake.params("data.changes") == [{"cursor": "c1", "ownerExternalId": "o"}]


@pytest.mark.anyio
async def test_async_errors(fake: FakeDaemon, short_dir: Path) -> None:
    fake.errors["import.get"] = {"code": -32004, "message": "not found"}
    with pytest.raises(RpcError) as info:
        await AsyncClient(fake.path).get_import("nope")
    assert info.value.code == -32004
    with pytest.raises(DaemonUnavailable, match=r"missing\.sock"):
        await AsyncClient(short_dir / "missing.sock").status()
    fake.raw["daemon.status"] = b""
    with pytest.raises(DaemonUnavailable, match="without answering"):
        await AsyncClient(fake.path).status()
    fake.results["billing.report"] = lambda _: time.sleep(0.5)
    with pytest.raises(DaemonUnavailable, match="no answer in time"):
        await AsyncClient(fake.path, timeout=0.05).billing_report("2026-11")


def test_default_socket_path_from_settings_environment(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    monkeypatch.delenv("AISD_SOCKET_PATH", raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(short_dir))
    assert Client().socket_path == short_dir / "aisd.sock"
    monkeypatch.setenv("AISD_SOCKET_PATH", "/run/aisd/aisd.sock")
    assert AsyncClient().socket_path == Path("/run/aisd/aisd.sock")
