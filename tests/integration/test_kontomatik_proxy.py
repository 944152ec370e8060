"""The Kontomatik client honours the proxy the environment names (``HTTP_PROXY``), as httpx's
own client does: it sends through the transport that client picked for the API's origin."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from aisd.kontomatik import KontomatikClient
from tests.conftest import FIXTURES

SCORES = (FIXTURES / "v1.owner-scores-reply.xml").read_bytes()
KEY = "sekret-api-key-0123456789"


class _Proxy:
    """A forward proxy that answers every request itself, and keeps each request's head."""

    def __init__(self) -> None:
        self.heads: list[list[bytes]] = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = []
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    head.append(line.rstrip(b"\r\n"))
                proxy.heads.append(head)
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(SCORES), SCORES)
                )

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    running = _Proxy()
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{running.port}")
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


@pytest.mark.anyio
async def test_requests_go_through_the_environment_proxy(proxy: _Proxy) -> None:
    async with KontomatikClient("http://kontomatik.invalid/api", KEY) as client:
        scores = await client.owner_scores("owner-1")
    assert scores
    ((request_line, *headers),) = proxy.heads
    # A forward proxy is asked for the absolute URL, the base's path kept before the endpoint's.
    assert request_line == (
        b"GET http://kontomatik.invalid/api/v1/owner-scores.xml?ownerExternalId=owner-1 HTTP/1.1"
    )
    assert f"x-api-key: {KEY}".lower().encode() in [h.lower() for h in headers]
