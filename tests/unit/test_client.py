"""KontomatikClient over httpx.MockTransport: requests sent, streaming, error paths, no secrets."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import date
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from aisd.kontomatik import (
    CommandState,
    KontomatikClient,
    KontomatikError,
    QuotaError,
    RetryLaterError,
    Session,
    SessionDeadError,
    TokenDeadError,
    UnauthorizedError,
    UnknownApiError,
    gunzip_reply,
    parse_command,
)
from tests.conftest import FIXTURES

KEY = "sekret-api-key-0123456789"
SIGNATURE = "sig-abcdef-987654"
TOKEN = "mai-token-55555"
BASE = "https://kontomatik.test"
SUCCESS = (FIXTURES / "v1.command-reply.default-import.xml").read_bytes()
SETUP = (FIXTURES / "v1.default-import-reply.xml").read_bytes()

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


class Recorder:
    """A MockTransport handler that answers one canned reply and keeps the requests."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._reply = reply

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self._reply(request)


def _client(handler: Handler, **kwargs: int) -> KontomatikClient:
    return KontomatikClient(BASE, KEY, transport=httpx.MockTransport(handler), **kwargs)


def _form(request: httpx.Request) -> dict[str, list[str]]:
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return parse_qs(request.content.decode())


async def _chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _exception_reply(status: int, name: str, message: str) -> httpx.Response:
    body = f'<reply><exception name="{name}"><message>{message}</message></exception></reply>'
    return httpx.Response(status, content=body.encode())


@pytest.mark.anyio
async def test_default_import_posts_the_session() -> None:
    recorder = Recorder(lambda _: httpx.Response(202, content=SETUP))
    async with _client(recorder) as client:
        command = await client.default_import(Session("S-1", SIGNATURE), date(2024, 1, 31))
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.url == f"{BASE}/v1/command/default-import.xml"
    assert request.headers["x-api-key"] == KEY
    assert _form(request) == {
        "sessionId": ["S-1"],
        "sessionIdSignature": [SIGNATURE],
        "since": ["2024-01-31"],
    }
    assert (command.id, command.state, command.progress) == ("455026009", CommandState.SETUP, 0)


@pytest.mark.anyio
async def test_import_result_streams_and_keeps_the_gzip_body() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, content=_chunked(SUCCESS, 777)))
    async with _client(recorder) as client:
        reply = await client.get_import_result("455026009")
    (request,) = recorder.requests
    assert (request.method, request.url.path) == ("GET", "/v1/command/455026009.xml")
    assert request.headers["x-api-key"] == KEY
    assert reply.command.state is CommandState.SUCCESSFUL
    assert reply.command.result is not None
    assert reply.command.result.transaction_count == 72
    assert reply.raw is not None
    assert gzip.decompress(reply.raw) == SUCCESS
    _, replayed = parse_command(gunzip_reply(reply.raw), max_bytes=1 << 24)
    assert replayed == reply.command
    assert "raw=" not in repr(reply)


@pytest.mark.anyio
async def test_a_final_state_is_told_before_the_result_is_read() -> None:
    told: list[tuple[CommandState, int]] = []
    fed = 0

    async def counted(data: bytes) -> AsyncIterator[bytes]:
        nonlocal fed
        async for chunk in _chunked(data, 200):
            fed += len(chunk)
            yield chunk

    paced = 0

    async def pace() -> None:
        nonlocal paced
        paced += 1

    recorder = Recorder(lambda _: httpx.Response(200, content=counted(SUCCESS)))
    async with _client(recorder) as client:
        reply = await client.get_import_result(
            "455026009", on_final=lambda state: told.append((state, fed)), pace=pace
        )
    # Once, from the first chunks: long before the whole body had arrived.
    ((state, at),) = told
    assert state is CommandState.SUCCESSFUL
    assert at < len(SUCCESS) // 4
    assert reply.command.result is not None
    # The caller was given a say after every slice of the body.
    assert paced >= len(SUCCESS) // 200


@pytest.mark.anyio
async def test_a_running_command_is_not_told_final() -> None:
    told: list[CommandState] = []
    recorder = Recorder(lambda _: httpx.Response(200, content=SETUP))
    async with _client(recorder) as client:
        reply = await client.get_import_result("455026009", on_final=told.append)
    assert reply.command.state is CommandState.SETUP
    assert told == []


@pytest.mark.anyio
async def test_unfinished_command_keeps_no_body() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, content=SETUP))
    async with _client(recorder) as client:
        reply = await client.get_import_result("455026009")
    assert reply.command.state is CommandState.SETUP
    assert reply.raw is None


@pytest.mark.anyio
async def test_reuse_multiple_access_returns_a_session() -> None:
    body = f'<reply status="200 OK"><session id="S-2" signature="{SIGNATURE}"/></reply>'
    recorder = Recorder(lambda _: httpx.Response(200, content=body.encode()))
    async with _client(recorder) as client:
        session = await client.reuse_multiple_access(TOKEN)
    (request,) = recorder.requests
    assert (request.method, request.url.path) == ("POST", "/v1/command/reuse-multiple-access.xml")
    assert _form(request) == {"multipleAccessId": [TOKEN]}
    assert session == Session("S-2", SIGNATURE)
    assert SIGNATURE not in repr(session)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b""),
        httpx.Response(204),
        httpx.Response(200, content=b'<reply status="200 OK"/>'),
    ],
)
async def test_revoke_accepts_any_success(response: httpx.Response) -> None:
    recorder = Recorder(lambda _: response)
    async with _client(recorder) as client:
        await client.revoke_multiple_access(TOKEN)
    (request,) = recorder.requests
    assert request.url.path == "/v1/command/delete-multiple-access.xml"
    assert _form(request) == {"multipleAccessId": [TOKEN]}


@pytest.mark.anyio
async def test_owner_scores_query() -> None:
    body = (FIXTURES / "v1.owner-scores-reply.xml").read_bytes()
    recorder = Recorder(lambda _: httpx.Response(200, content=body))
    async with _client(recorder) as client:
        scores = await client.owner_scores("owner-1")
    (request,) = recorder.requests
    assert request.url.path == "/v1/owner-scores.xml"
    assert request.url.params["ownerExternalId"] == "owner-1"
    assert [(s.model_id, s.tier) for s in scores] == [("common-2023-03-07", "C")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "cls", "name"),
    [
        (
            httpx.Response(404, content=(FIXTURES / "session-expired-reply.xml").read_bytes()),
            SessionDeadError,
            "InvalidSessionId",
        ),
        (
            httpx.Response(401, content=(FIXTURES / "unauthorized-reply.xml").read_bytes()),
            UnauthorizedError,
            "Unauthorized",
        ),
        (_exception_reply(400, "MultipleAccessLimitExceeded", "q"), QuotaError, "QuotaError"),
        (httpx.Response(503, content=b"<html/>"), RetryLaterError, "HttpStatus503"),
        (httpx.Response(200, content=b"<reply><session"), RetryLaterError, "MalformedReply"),
    ],
)
async def test_error_replies(
    response: httpx.Response, cls: type[KontomatikError], name: str
) -> None:
    async with _client(Recorder(lambda _: response)) as client:
        with pytest.raises(cls) as info:
            await client.reuse_multiple_access(TOKEN)
    assert info.value.name in (name, "MultipleAccessLimitExceeded")
    # A reply the client itself could not read has no upstream status to report.
    expected = None if name == "MalformedReply" else response.status_code
    assert info.value.http_status == expected


@pytest.mark.anyio
async def test_oversize_stream_is_refused() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, content=_chunked(SUCCESS, 4096)))
    async with _client(recorder, max_reply_bytes=10_000) as client:
        with pytest.raises(UnknownApiError) as info:
            await client.get_import_result("1")
    assert info.value.name == "ReplyTooLarge"


@pytest.mark.anyio
async def test_oversize_whole_body_is_refused() -> None:
    recorder = Recorder(lambda _: httpx.Response(202, content=SETUP))
    async with _client(recorder, max_reply_bytes=100) as client:
        with pytest.raises(UnknownApiError, match="ReplyTooLarge"):
            await client.default_import(Session("S", SIGNATURE), date(2024, 1, 1))


def _raising(exc: Exception) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "name", "sent"),
    [
        (httpx.ConnectError(f"refused for key {KEY}"), "NetworkError", False),
        (httpx.ConnectTimeout("slow connect"), "NetworkError", False),
        (httpx.PoolTimeout("no connection"), "Timeout", False),
        (httpx.ReadTimeout(f"slow read {TOKEN}"), "Timeout", True),
        (httpx.WriteTimeout("slow write"), "Timeout", True),
        (httpx.ReadError("reset"), "NetworkError", True),
        (httpx.RemoteProtocolError("bad http"), "NetworkError", True),
        (httpx.DecodingError("bad gzip"), "MalformedReply", True),
    ],
)
async def test_transport_errors(exc: Exception, name: str, sent: bool) -> None:
    async with _client(_raising(exc)) as client:
        with pytest.raises(RetryLaterError) as info:
            await client.reuse_multiple_access(TOKEN)
    assert (info.value.name, info.value.sent) == (name, sent)
    assert info.value.__cause__ is None
    for text in (str(info.value), repr(info.value), info.value.message):
        assert KEY not in text
        assert TOKEN not in text


@pytest.mark.anyio
async def test_read_error_mid_stream_is_retried_later() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield SUCCESS[:1000]
        raise httpx.ReadError("connection reset")

    async with _client(Recorder(lambda _: httpx.Response(200, content=broken()))) as client:
        with pytest.raises(RetryLaterError) as info:
            await client.get_import_result("1")
    assert (info.value.name, info.value.sent) == ("NetworkError", True)


def _echo(name: str, status: int = 400) -> Handler:
    """Upstream echoing, in its message, every form field and header it was sent."""

    async def handler(request: httpx.Request) -> httpx.Response:
        sent = [v for values in parse_qs(request.content.decode()).values() for v in values]
        message = " ".join([*sent, request.headers["x-api-key"]])
        return _exception_reply(status, name, message)

    return handler


@pytest.mark.anyio
async def test_echoed_secrets_never_reach_errors_or_reprs() -> None:
    async with _client(_echo("InvalidParameter")) as client:
        assert KEY not in repr(client)
        with pytest.raises(UnknownApiError) as reuse:
            await client.reuse_multiple_access(TOKEN)
        with pytest.raises(UnknownApiError) as imp:
            await client.default_import(Session("S-7", SIGNATURE), date(2024, 1, 1))
    async with _client(_echo("InvalidMultipleAccessId", 200)) as client:
        with pytest.raises(TokenDeadError) as dead:
            await client.reuse_multiple_access(TOKEN)
    for error in (reuse.value, imp.value, dead.value):
        for text in (str(error), repr(error), error.message, *map(str, error.args)):
            for secret in (KEY, SIGNATURE, TOKEN):
                assert secret not in text
        assert "***" in error.message
    # What is not secret stays, so the error remains useful.
    assert "S-7" in imp.value.message
    assert "2024-01-01" in imp.value.message


@pytest.mark.anyio
async def test_failed_command_message_is_scrubbed_of_the_signature() -> None:
    body = (
        '<reply status="200 OK"><command id="9" state="fatal"><exception name="X">'
        f"<message>bad {SIGNATURE}</message></exception></command></reply>"
    )
    recorder = Recorder(lambda _: httpx.Response(202, content=body.encode()))
    async with _client(recorder) as client:
        command = await client.default_import(Session("S", SIGNATURE), date(2024, 1, 1))
    assert command.failure is not None
    assert command.failure.message == "bad ***"
    assert command.state is CommandState.FATAL
