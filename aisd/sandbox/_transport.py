"""httpx to the sandbox's ASGI app in this process, without a socket.

``httpx.ASGITransport`` does the same exchange, but asks on every request whether trio is
running by importing ``sniffio``; where sniffio is not installed (anyio no longer needs it) that
import fails and searches ``sys.path`` again each time, a cost ``aisd simulate`` pays thousands
of times. This transport runs on anyio, which works under either.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio
import httpx

from aisd.sandbox._app import SandboxApp

__all__ = ["InProcessTransport"]


class InProcessTransport(httpx.AsyncBaseTransport):
    """Sends each request to ``app`` as one ASGI HTTP exchange; the app's exceptions propagate.

    Args:
        app: the sandbox's ASGI app.
    """

    def __init__(self, app: SandboxApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Serve ``request`` through the app and return its whole reply."""
        body = await request.aread()
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        received = False
        complete = False
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        # Made only if the app asks for more after the body (to learn of a disconnect): it
        # rarely does, and an event costs its making on every request.
        ended: anyio.Event | None = None

        async def receive() -> dict[str, Any]:
            nonlocal received, ended
            if received:
                if not complete:
                    ended = ended or anyio.Event()
                    await ended.wait()
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                if message.get("body") and request.method != "HEAD":
                    parts.append(message["body"])
                if not message.get("more_body", False):
                    complete = True
                    if ended is not None:
                        ended.set()

        await self._app(scope, receive, send)
        if status is None or not complete:
            raise RuntimeError("the sandbox app returned without a complete reply")
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"".join(parts)))
