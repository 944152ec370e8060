"""One connection's newline-framed reads and writes, each allowed a limited time.

Most reads and writes on a busy local socket complete at once: the request line is already
buffered, the answer fits the socket's send buffer. Those take no wait and no timer; only an
operation that must wait is watched. Instead of a timeout armed and disarmed around every read
and write (a fifth of a request's CPU at thousands of requests a second), each connection notes
when its waiting operation began, and one :class:`Watchdog` task for all connections cancels a
connection whose operation has waited longer than the limit.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import anyio.lowlevel
from anyio.abc import SocketAttribute, SocketStream

__all__ = ["Framed", "Watchdog"]

_CHUNK = 65536


class Framed:
    """Lines read from and bytes written to ``stream``; the stream stays the caller's to close,
    after :meth:`close`.

    While a line is wanted and not buffered, the socket stays registered with the event loop,
    whose callback reads what arrived into the buffer, as asyncio's own transports do:
    registering and unregistering the socket around every wait (the stream's receive) was a
    quarter of the socket layer's time per request, each wait also costing an extra turn of
    the loop and a read that could only fail. The daemon runs on asyncio only.

    Args:
        stream: A connected socket stream.
    """

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        # S610 mistakes anyio's typed attributes for Django's QuerySet.extra.
        self.socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610
        """The connection's socket, for its peer's credentials."""
        self.socket.setblocking(False)
        self._fd = self.socket.fileno()
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        # Reading pauses once this much is buffered, until a line is asked for again.
        self._high = _CHUNK
        self._reading = False
        self._ended = False
        self._failure: OSError | None = None
        self._arrived: asyncio.Future[None] | None = None
        self.waiting_since: float | None = None
        """``time.monotonic()`` when the read or write in progress began to wait, else None."""
        self.scope = anyio.CancelScope()
        """Cancelled by the watchdog: the connection's work runs inside it."""
        self.expired = False
        """True once the watchdog cut the connection off."""

    async def line(self, limit: int) -> bytes:
        """The next line without its newline; it may be longer than ``limit`` when its newline
        arrived in the same read.

        Raises:
            anyio.DelimiterNotFound: ``limit`` bytes are buffered without a newline; they stay
                buffered (see :meth:`discard`).
            anyio.IncompleteRead: The peer closed the stream first.
            anyio.BrokenResourceError: The connection failed.
        """
        buffer = self._buffer
        offset = 0
        waited = False
        self._high = max(limit, _CHUNK)
        try:
            while True:
                index = buffer.find(b"\n", offset)
                if index >= 0:
                    found = bytes(buffer[:index])
                    del buffer[: index + 1]
                    if not waited:
                        # Served without waiting: let the other connections have their turn.
                        await anyio.lowlevel.checkpoint()
                    return found
                if len(buffer) >= limit:
                    raise anyio.DelimiterNotFound(limit)
                offset = len(buffer)
                if self._failure is not None:
                    raise anyio.BrokenResourceError from self._failure
                if self._ended:
                    raise anyio.IncompleteRead
                if not self._reading:
                    # What the socket holds already is read at once, without a wait.
                    self._read_ready()
                    if len(buffer) > offset or self._ended or self._failure is not None:
                        continue
                    self._loop.add_reader(self._fd, self._read_ready)
                    self._reading = True
                if self.waiting_since is None:
                    # One line may take this long in all, however it is split.
                    self.waiting_since = time.monotonic()
                waited = True
                self._arrived = self._loop.create_future()
                try:
                    await self._arrived
                finally:
                    self._arrived = None
        finally:
            self.waiting_since = None

    def _read_ready(self) -> None:
        """Read what the socket holds into the buffer (the loop calls it once readable)."""
        try:
            data = self.socket.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failure = exc
            data = b""
        if data:
            self._buffer += data
        else:
            self._ended = True
        if self._reading and (not data or len(self._buffer) >= self._high):
            self.close()
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    def close(self) -> None:
        """Stop reading: the loop must let go of the socket before it is closed."""
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def discard(self) -> int:
        """Drop what is buffered; returns how many bytes that was."""
        dropped = len(self._buffer)
        self._buffer.clear()
        return dropped

    async def send(self, data: bytes) -> None:
        """Write ``data`` whole.

        Raises:
            anyio.BrokenResourceError: The connection failed.
        """
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        if sent == len(data):
            return
        self.waiting_since = time.monotonic()
        try:
            await self._stream.send(data[sent:])
        finally:
            self.waiting_since = None


class Watchdog:
    """Cuts off the connections whose read or write has waited ``timeout`` seconds or more;
    each is noticed within a quarter of ``timeout`` after that.

    Args:
        timeout: Seconds one read (of a whole line) or one write may wait.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._watched: set[Framed] = set()

    def watch(self, framed: Framed) -> None:
        """Watch ``framed`` until :meth:`forget`."""
        self._watched.add(framed)

    def forget(self, framed: Framed) -> None:
        """Stop watching ``framed``."""
        self._watched.discard(framed)

    async def run(self) -> None:
        """Check every quarter of the timeout, until cancelled."""
        while True:
            await anyio.sleep(self._timeout / 4)
            now = time.monotonic()
            for framed in self._watched:
                since = framed.waiting_since
                if since is not None and now - since >= self._timeout:
                    framed.expired = True
                    framed.scope.cancel()
