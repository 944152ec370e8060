"""A real RpcServer on a temporary Unix socket, driven by raw socket clients."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from structlog.testing import capture_logs

from aisd.rpc import (
    BUSY,
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PEER_NOT_ALLOWED,
    Handler,
    ListenError,
    Params,
    Peer,
    RpcError,
    RpcServer,
    open_listener,
)

pytestmark = pytest.mark.anyio

SECRET = "multiple-access-9f8e7d"
ME = os.getuid()
NOT_ME = ME + 4242


class _Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []


def _handlers(recorder: _Recorder) -> dict[str, Handler]:
    async def echo(params: Params, peer: Peer) -> object:
        params.reject_unknown({"text"})
        return {"text": params.str_("text"), "uid": peer.uid, "pid": peer.pid}

    async def add(params: Params, peer: Peer) -> object:
        return params.int_("a") + params.int_("b")

    async def boom(params: Params, peer: Peer) -> object:
        raise RuntimeError(SECRET)

    async def unencodable(params: Params, peer: Peer) -> object:
        return {"value": object()}

    async def conflict(params: Params, peer: Peer) -> object:
        raise RpcError(CONFLICT, "token is revoked", {"tokenId": "tok_1"})

    async def note(params: Params, peer: Peer) -> object:
        recorder.notes.append(params.str_("text"))
        return None

    async def notes(params: Params, peer: Peer) -> object:
        return recorder.notes

    return {
        "echo": echo,
        "add": add,
        "boom": boom,
        "unencodable": unencodable,
        "conflict": conflict,
        "note": note,
        "notes": notes,
    }


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    with tempfile.TemporaryDirectory(prefix="aisd-rpc-") as name:
        yield Path(name)


@asynccontextmanager
async def running(
    socket_dir: Path,
    *,
    allowed_uids: frozenset[int] = frozenset({ME}),
    allowed_gids: frozenset[int] = frozenset(),
    recorder: _Recorder | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    path = str(socket_dir / "rpc.sock")
    listener, activated = await open_listener(path, 0o600)
    assert not activated
    server = RpcServer(
        _handlers(recorder or _Recorder()),
        allowed_uids=allowed_uids,
        allowed_gids=allowed_gids,
        **options,
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve, listener)
            yield path
            # anyio 4.16 (asyncio) raises InvalidStateError in a loop callback when a Unix
            # socket read is cancelled in the same iteration its peer closes; let every
            # connection see its EOF first so teardown does not race.
            while server.active_connections:  # noqa: ASYNC110 - the server has no idle event
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


class Client:
    """A raw line-oriented client, so tests control every byte sent."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def line(self) -> bytes:
        with anyio.fail_after(5):
            return await self.reader.receive_until(b"\n", 1 << 20)

    async def reply(self) -> dict[str, Any]:
        reply = json.loads(await self.line())
        assert isinstance(reply, dict)
        return reply

    async def call(self, method: str, params: object = None, request_id: int = 1) -> Any:
        request: dict[str, object] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.send(json.dumps(request).encode() + b"\n")
        return await self.reply()

    async def closed_by_server(self) -> bool:
        with anyio.fail_after(5):
            try:
                await self.reader.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return True
        return False


@asynccontextmanager
async def connect(path: str) -> AsyncIterator[Client]:
    async with await anyio.connect_unix(path) as stream:
        yield Client(stream)


def _error(reply: dict[str, Any]) -> tuple[object, int, str]:
    return reply["id"], reply["error"]["code"], reply["error"]["message"]


async def test_happy_path_and_compact_utf8_replies(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client:
        await client.send(
            '{"jsonrpc":"2.0","id":"a-1","method":"echo","params":{"text":"żółw"}}\n'.encode()
        )
        raw = await client.line()
        result = f'{{"text":"żółw","uid":{ME},"pid":{os.getpid()}}}'
        assert raw == f'{{"jsonrpc":"2.0","id":"a-1","result":{result}}}'.encode()
        assert await client.call("add", {"a": 2, "b": 40}, 2) == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": 42,
        }


async def test_pipelined_requests_are_answered_in_order(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client:
        lines = [
            json.dumps({"jsonrpc": "2.0", "id": n, "method": "add", "params": {"a": n, "b": 1}})
            for n in range(1, 6)
        ]
        await client.send(("\n".join(lines) + "\n").encode())
        replies = [await client.reply() for _ in lines]
        assert [(r["id"], r["result"]) for r in replies] == [(n, n + 1) for n in range(1, 6)]


async def test_garbage_and_invalid_json_keep_the_connection_usable(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client:
        await client.send(b"\xff\x00\x9c garbage\n{oops\n\n   \n")
        assert _error(await client.reply()) == (None, PARSE_ERROR, "parse error")
        assert _error(await client.reply()) == (None, PARSE_ERROR, "parse error")
        assert (await client.call("add", {"a": 1, "b": 1}))["result"] == 2


async def test_oversized_line_is_refused_and_the_server_resynchronises(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client, connect(path) as other:
        with capture_logs() as logs:
            await client.send(b"x" * (1 << 20) + b"\n")
            assert _error(await client.reply()) == (
                None,
                INVALID_REQUEST,
                "invalid request: line too long",
            )
            assert (await other.call("add", {"a": 3, "b": 4}))["result"] == 7
            assert (await client.call("add", {"a": 1, "b": 2}, 5)) == {
                "jsonrpc": "2.0",
                "id": 5,
                "result": 3,
            }
        assert {
            "event": "rpc.protocol_error",
            "log_level": "warning",
            "code": INVALID_REQUEST,
            "reason": "line too long",
        } in logs


async def test_line_length_limit_is_exact(socket_dir: Path) -> None:
    async with running(socket_dir, max_line_bytes=200) as path, connect(path) as client:
        request = b'{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":2}}'
        await client.send(request.ljust(200) + b"\n")
        assert (await client.reply())["result"] == 3
        await client.send(request.ljust(201) + b"\n")
        assert _error(await client.reply())[1] == INVALID_REQUEST
        assert (await client.call("add", {"a": 2, "b": 2}))["result"] == 4


async def test_a_line_that_never_ends_closes_the_connection(socket_dir: Path) -> None:
    async with (
        running(socket_dir, max_line_bytes=64, idle_timeout=0.3) as path,
        connect(path) as client,
    ):
        await client.send(b"y" * 500)
        assert _error(await client.reply())[1] == INVALID_REQUEST
        assert await client.closed_by_server()


async def test_a_peer_streaming_without_newlines_is_cut_off(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aisd.rpc._server._MAX_SKIP_BYTES", 4096)
    async with running(socket_dir, max_line_bytes=64) as path, connect(path) as client:
        with capture_logs() as logs:
            await client.send(b"z" * 20_000)
            assert _error(await client.reply())[1] == INVALID_REQUEST
            assert await client.closed_by_server()
        assert {"code": INVALID_REQUEST, "reason": "no resync"}.items() <= logs[-1].items()


async def test_wrong_types_and_params(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client:
        reply = await client.call("add", [1, 2], 1)
        assert _error(reply) == (1, INVALID_PARAMS, "invalid params: params must be an object")
        reply = await client.call("add", {"a": "1", "b": 2}, 2)
        assert _error(reply) == (2, INVALID_PARAMS, "invalid params: 'a' must be an integer")
        assert reply["error"]["data"] == {"field": "a"}
        reply = await client.call("echo", {"text": "hi", "sessionIdSignature": SECRET}, 3)
        assert _error(reply) == (
            3,
            INVALID_PARAMS,
            "invalid params: 'sessionIdSignature' is not a known field",
        )
        assert SECRET not in json.dumps(reply)
        await client.send(b'{"jsonrpc":"2.0","id":true,"method":"add"}\n')
        assert _error(await client.reply()) == (
            None,
            INVALID_REQUEST,
            "invalid request: 'id' must be a string, a number or null",
        )
        await client.send(b'{"jsonrpc":"2.0","id":1.5,"method":"add","params":{"a":1,"b":1}}\n')
        assert await client.line() == b'{"jsonrpc":"2.0","id":1.5,"result":2}'
        await client.send(b'{"jsonrpc":"2.0","id":6,"method":"add","params":3}\n')
        assert _error(await client.reply()) == (
            6,
            INVALID_REQUEST,
            "invalid request: 'params' must be an object or an array",
        )
        await client.send(b'{"jsonrpc":"2.0","id":4,"method":["add"]}\n')
        assert _error(await client.reply()) == (
            4,
            INVALID_REQUEST,
            "invalid request: 'method' must be a string",
        )
        await client.send(b'"just a string"\n')
        assert _error(await client.reply())[1:] == (
            INVALID_REQUEST,
            "invalid request: not an object",
        )


async def test_unknown_method(socket_dir: Path) -> None:
    async with running(socket_dir) as path, connect(path) as client:
        assert _error(await client.call("nope.nope", {}, 8)) == (
            8,
            METHOD_NOT_FOUND,
            "method not found",
        )


async def test_a_batch_gets_an_array_of_responses_in_order(socket_dir: Path) -> None:
    recorder = _Recorder()
    async with running(socket_dir, recorder=recorder) as path, connect(path) as client:
        await client.send(
            b'[{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":1}},'
            b'{"jsonrpc":"2.0","method":"note","params":{"text":"in a batch"}},'
            b'{"jsonrpc":"2.0","id":"two","method":"nope"},'
            b"42,"
            b'{"jsonrpc":"2.0","id":null,"method":"add","params":{"a":"x"}}]\n'
        )
        replies = json.loads(await client.line())
        assert replies == [
            {"jsonrpc": "2.0", "id": 1, "result": 2},
            {
                "jsonrpc": "2.0",
                "id": "two",
                "error": {"code": METHOD_NOT_FOUND, "message": "method not found"},
            },
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": INVALID_REQUEST, "message": "invalid request: not an object"},
            },
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": INVALID_PARAMS,
                    "message": "invalid params: 'a' must be an integer",
                    "data": {"field": "a"},
                },
            },
        ]
        assert recorder.notes == ["in a batch"]
        # A batch of notifications only gets no line at all; an empty batch is one error.
        await client.send(b'[{"jsonrpc":"2.0","method":"note","params":{"text":"quiet"}}]\n')
        await client.send(b"[]\n")
        assert _error(await client.reply()) == (
            None,
            INVALID_REQUEST,
            "invalid request: empty batch",
        )
        assert (await client.call("add", {"a": 2, "b": 3}))["result"] == 5
        assert recorder.notes == ["in a batch", "quiet"]


async def test_notifications_run_but_get_no_response(socket_dir: Path) -> None:
    recorder = _Recorder()
    async with running(socket_dir, recorder=recorder) as path, connect(path) as client:
        await client.send(b'{"jsonrpc":"2.0","method":"note","params":{"text":"one"}}\n')
        await client.send(b'{"jsonrpc":"2.0","method":"no.such.method"}\n')
        await client.send(b'{"jsonrpc":"2.0","method":"boom"}\n')
        # The next line read must be this call's reply: the three above produced nothing.
        assert await client.call("notes", None, 77) == {
            "jsonrpc": "2.0",
            "id": 77,
            "result": ["one"],
        }


async def test_silent_peer_times_out_while_others_are_served(socket_dir: Path) -> None:
    # Long enough that the busy peer's calls end well inside it on a loaded machine: 0.4 s
    # left little room for three round trips there.
    idle = 2.0
    async with running(socket_dir, idle_timeout=idle) as path, connect(path) as silent:
        started = time.monotonic()
        async with connect(path) as busy:
            for n in range(3):
                assert (await busy.call("add", {"a": n, "b": 0}, n))["result"] == n
                await anyio.sleep(0.05)
        assert time.monotonic() - started < idle
        assert await silent.closed_by_server()
        assert idle - 0.05 <= time.monotonic() - started < idle + 3


async def test_a_line_trickled_in_parts_gets_the_idle_timeout_in_all(socket_dir: Path) -> None:
    # The limit is on one whole line, not on each part of it: a peer sending a byte now and
    # then without ever ending the line is cut off like a silent one.
    async with running(socket_dir, idle_timeout=0.4) as path, connect(path) as slow:

        async def trickle() -> None:
            for _ in range(60):
                await slow.send(b" ")
                await anyio.sleep(0.05)

        started = time.monotonic()
        with pytest.raises((anyio.BrokenResourceError, anyio.ClosedResourceError)):
            await trickle()
        assert 0.35 <= time.monotonic() - started < 3
        assert await slow.closed_by_server()


async def test_connections_beyond_the_cap_get_busy(socket_dir: Path) -> None:
    async with running(socket_dir, max_connections=2) as path:
        async with connect(path) as first, connect(path) as second:
            assert (await first.call("add", {"a": 1, "b": 0}))["result"] == 1
            assert (await second.call("add", {"a": 2, "b": 0}))["result"] == 2
            async with connect(path) as third:
                assert _error(await third.reply()) == (None, BUSY, "busy")
                assert await third.closed_by_server()
        # Once the others leave, there is room again.
        with anyio.fail_after(5):
            while True:
                async with connect(path) as fourth:
                    reply = await fourth.call("add", {"a": 4, "b": 0})
                if "result" in reply:
                    break
                await anyio.sleep(0.02)
        assert reply["result"] == 4


async def test_refused_peer_gets_one_error_and_is_closed(socket_dir: Path) -> None:
    with capture_logs() as logs:
        async with (
            running(socket_dir, allowed_uids=frozenset({NOT_ME})) as path,
            connect(path) as client,
        ):
            assert _error(await client.call("add", {"a": 1, "b": 1}, 9)) == (
                9,
                PEER_NOT_ALLOWED,
                "peer not allowed",
            )
            assert await client.closed_by_server()
    refused = [entry for entry in logs if entry["event"] == "rpc.peer_refused"]
    assert refused == [
        {"event": "rpc.peer_refused", "log_level": "warning", "uid": ME, "pid": os.getpid()}
    ]


async def test_peer_allowed_through_its_group(socket_dir: Path) -> None:
    async with (
        running(
            socket_dir, allowed_uids=frozenset({NOT_ME}), allowed_gids=frozenset({os.getgid()})
        ) as path,
        connect(path) as client,
    ):
        assert (await client.call("echo", {"text": "via group"}))["result"]["text"] == "via group"


async def test_handler_failures_are_internal_errors_without_details(socket_dir: Path) -> None:
    with capture_logs() as logs:
        async with running(socket_dir) as path, connect(path) as client:
            reply = await client.call("boom", None, 1)
            assert reply == {
                "jsonrpc": "2.0",
                "id": 1,
                "error": {"code": INTERNAL_ERROR, "message": "internal error"},
            }
            reply = await client.call("unencodable", None, 2)
            assert _error(reply) == (2, INTERNAL_ERROR, "internal error")
            reply = await client.call("conflict", None, 3)
            assert reply["error"] == {
                "code": CONFLICT,
                "message": "token is revoked",
                "data": {"tokenId": "tok_1"},
            }
            assert (await client.call("add", {"a": 1, "b": 1}, 4))["result"] == 2
    failed = [entry for entry in logs if entry["event"] == "rpc.handler_failed"]
    assert len(failed) == 1
    assert failed[0]["method"] == "boom"
    assert failed[0]["exc_info"] is True


async def test_own_socket_is_created_with_its_mode_and_removed_on_close(socket_dir: Path) -> None:
    path = socket_dir / "own.sock"
    listener, activated = await open_listener(str(path), 0o620)
    assert not activated
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o620
    await listener.aclose()
    assert not path.exists()


async def test_stale_socket_is_replaced_but_live_sockets_and_files_are_not(
    socket_dir: Path,
) -> None:
    stale = socket_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(stale))
    listener, _ = await open_listener(str(stale), 0o600)
    async with listener:
        with pytest.raises(ListenError, match="in use by another process"):
            await open_listener(str(stale), 0o600)
    regular = socket_dir / "regular"
    regular.write_text("keep me")
    with pytest.raises(ListenError, match="is not a socket"):
        await open_listener(str(regular), 0o600)
    assert regular.read_text() == "keep me"
