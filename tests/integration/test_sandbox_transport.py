"""The in-process transport: the same exchange as ``httpx.ASGITransport``, reply for reply."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aisd.sandbox import DEFAULT_API_KEY, PATHS, InProcessTransport, Sandbox, SandboxApp

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


async def _replies(transport: httpx.AsyncBaseTransport) -> list[tuple[int, str, bytes]]:
    headers = {"X-Api-Key": DEFAULT_API_KEY}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox", headers=headers
    ) as client:
        sent = [
            client.build_request("GET", "/no/such/path"),
            client.build_request("POST", PATHS["mock_session"], data={"target": "x"}),
            client.build_request("POST", PATHS["mock_session"], headers={"X-Api-Key": "wrong"}),
        ]
        out = []
        for request in sent:
            reply = await client.send(request)
            out.append((reply.status_code, reply.headers.get("content-type", ""), reply.content))
        return out


async def test_replies_match_asgi_transport() -> None:
    def box() -> Sandbox:
        return Sandbox(clock=lambda: START)

    ours = await _replies(InProcessTransport(SandboxApp(box())))
    theirs = await _replies(httpx.ASGITransport(app=SandboxApp(box())))
    assert ours == theirs
    assert {status for status, _, _ in ours} >= {401}


async def test_an_app_that_never_replies_is_an_error() -> None:
    class Silent(SandboxApp):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            message: MutableMapping[str, Any] = {"type": "http.response.start", "status": 200}
            await send(message)

    transport = InProcessTransport(Silent(Sandbox(clock=lambda: START)))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        with pytest.raises(RuntimeError, match="without a complete reply"):
            await client.get("/")
