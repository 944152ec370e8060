"""``GET /metrics`` over HTTP on ``AISD_METRICS_LISTEN``: a small anyio server, one request per
connection, so a slow or hostile client holds one task for at most a few seconds."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus

from aisd.metrics import CONTENT_TYPE

__all__ = ["MAX_REQUEST_BYTES", "REQUEST_TIMEOUT_SECONDS", "serve_metrics"]

log = structlog.get_logger("aisd.metrics")

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 5.0
# A scrape that cannot read the store in this long fails (Prometheus marks the target down).
SCRAPE_TIMEOUT_SECONDS = 10.0


async def serve_metrics(
    host: str,
    port: int,
    scrape: Callable[[], Awaitable[bytes]],
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``scrape()`` at ``/metrics`` until cancelled; ``task_status`` gets the bound port."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    async with listener:
        bound = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610
        log.info("metrics.listening", host=host, port=bound)
        task_status.started(bound)

        async def handle(stream: SocketStream) -> None:
            async with stream:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                    await _answer(stream, scrape)

        await listener.serve(handle)


async def _answer(stream: SocketStream, scrape: Callable[[], Awaitable[bytes]]) -> None:
    with anyio.move_on_after(REQUEST_TIMEOUT_SECONDS) as scope:
        head = await _read_head(stream)
    if scope.cancelled_caught or head is None:
        await _send(stream, 400, b"bad request\n")
        return
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        await _send(stream, 400, b"bad request\n")
        return
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        await _send(stream, 404, b"not found: metrics are at /metrics\n")
        return
    if method not in (b"GET", b"HEAD"):
        await _send(stream, 405, b"method not allowed\n", extra=b"Allow: GET, HEAD\r\n")
        return
    try:
        with anyio.fail_after(SCRAPE_TIMEOUT_SECONDS):
            body = await scrape()
    except Exception as exc:
        log.warning("metrics.scrape_failed", error=type(exc).__name__)
        await _send(stream, 503, b"metrics unavailable\n")
        return
    await _send(stream, 200, body, content_type=CONTENT_TYPE, head_only=method == b"HEAD")


async def _read_head(stream: SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_BYTES:
            return None
        data += await stream.receive(4096)
    return data


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def _send(
    stream: SocketStream,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> None:
    reason = _REASONS.get(status, "Service Unavailable")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    await stream.send(head + extra + b"\r\n" + (b"" if head_only else body))
