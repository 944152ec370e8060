"""The JSON-RPC 2.0 server: newline-delimited requests and batches on a Unix stream socket.

The wire format, error codes and every method are described in docs/api.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping

import anyio
import structlog
from anyio.abc import Listener, SocketStream

from aisd import __version__
from aisd.rpc._errors import (
    BUSY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PEER_NOT_ALLOWED,
    RpcError,
)
from aisd.rpc._framing import Framed, Watchdog
from aisd.rpc._params import Params
from aisd.rpc._peer import Peer, is_allowed, peer_credentials
from aisd.rpc._protocol import (
    Request,
    RequestError,
    decode_request,
    encode_batch,
    encode_error,
    encode_result,
    peek_id,
)
from aisd.rpc.openrpc import DISCOVER, ErrorSpec, MethodSpec, document

__all__ = ["Handler", "Peer", "RpcServer"]

Handler = Callable[[Params, Peer], Awaitable[object]]

_log = structlog.get_logger("aisd.rpc")

# How much of an oversized line is read and dropped to find the next request before the
# connection is given up on; a client streaming without newlines is cut off here.
_MAX_SKIP_BYTES = 16 * 1024 * 1024
_INTERNAL = RpcError(INTERNAL_ERROR, "internal error")
_TOO_LONG = RpcError(INVALID_REQUEST, "invalid request: line too long")


class RpcServer:
    """Answers JSON-RPC 2.0 requests, one per line, from allowed local peers.

    Each connection runs in its own task and its requests are handled one after the
    other, so responses come back in request order. No input from a peer can stop the
    server: every failure is contained in the connection that caused it.

    Args:
        handlers: Method name to coroutine function taking the params and the peer.
            A handler raises ``RpcError`` to answer with an error; any other exception is
            logged and answered with -32603 "internal error" and no details.
        allowed_uids: Users whose connections are served.
        allowed_gids: Groups (primary or supplementary) whose members are served.
        max_line_bytes: The longest request line, without its newline.
        idle_timeout: Seconds a connection may spend on one read or one write.
        max_connections: Connections served at once; further ones get -32029 and are closed.
        catalog: The specs of the methods (see :mod:`aisd.rpc.openrpc`). When given, every
            handler must have one: requests are bound with its signature (by name, or by
            position where allowed) and ``rpc.discover`` describes them all. Without it,
            params reach handlers as given and must be an object.
        common_errors: Errors every method may answer, for the OpenRPC document.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        allowed_uids: frozenset[int],
        allowed_gids: frozenset[int],
        max_line_bytes: int = 65536,
        idle_timeout: float = 30.0,
        max_connections: int = 64,
        catalog: Mapping[str, MethodSpec] | None = None,
        common_errors: tuple[ErrorSpec, ...] = (),
    ) -> None:
        if max_line_bytes < 1 or idle_timeout <= 0 or max_connections < 1:
            raise ValueError("max_line_bytes, idle_timeout and max_connections must be positive")
        self._handlers = dict(handlers)
        self._specs: dict[str, MethodSpec] = {}
        if catalog is not None:
            missing = sorted(set(self._handlers) - set(catalog))
            if missing:
                raise ValueError(
                    f"methods without a spec in the catalog (aisd/rpc/catalog.py): {missing}"
                )
            self._specs = {name: catalog[name] for name in self._handlers}
        self._specs[DISCOVER.name] = DISCOVER
        self._discovery = document(
            self._specs.values(), version=__version__, common_errors=common_errors
        )
        self._handlers.setdefault(DISCOVER.name, self._discover)
        self._allowed_uids = allowed_uids
        self._allowed_gids = allowed_gids
        self._max_line_bytes = max_line_bytes
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._active = 0
        self._connection_ids = itertools.count(1)
        self._watchdog = Watchdog(idle_timeout)

    @property
    def methods(self) -> frozenset[str]:
        """The names of the methods served, ``rpc.discover`` included."""
        return frozenset(self._handlers)

    async def _discover(self, params: Params, peer: Peer) -> object:
        return self._discovery

    @property
    def active_connections(self) -> int:
        """The number of connections being served now."""
        return self._active

    async def serve(
        self,
        listener: Listener[SocketStream],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until cancelled, then close the listener.

        Args:
            listener: A bound, listening Unix stream socket listener; the server owns it.
            task_status: Signalled once connections are being accepted.
        """
        async with listener, anyio.create_task_group() as connections:
            connections.start_soon(self._watchdog.run)
            task_status.started()
            await listener.serve(self._connection, task_group=connections)

    async def _connection(self, stream: SocketStream) -> None:
        conn = next(self._connection_ids)
        async with stream:
            io = Framed(stream)
            self._watchdog.watch(io)
            try:
                with io.scope:
                    if self._active >= self._max_connections:
                        _log.warning("rpc.busy", conn=conn, active=self._active)
                        await io.send(encode_error(None, RpcError(BUSY, "busy")))
                        return
                    self._active += 1
                    try:
                        await self._converse(io, conn)
                    finally:
                        self._active -= 1
                if io.expired:
                    _log.info("rpc.idle_timeout", conn=conn)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                _log.debug("rpc.peer_gone", conn=conn)
            except Exception:
                _log.exception("rpc.connection_failed", conn=conn)
            finally:
                self._watchdog.forget(io)
                io.close()

    async def _converse(self, io: Framed, conn: int) -> None:
        try:
            peer = peer_credentials(io.socket)
        except OSError:
            peer = None
        if peer is None or not is_allowed(peer, self._allowed_uids, self._allowed_gids):
            await self._refuse(io, peer)
            return
        with structlog.contextvars.bound_contextvars(rpc_conn=conn, peer_uid=peer.uid):
            while True:
                try:
                    line = await self._receive_line(io)
                except anyio.DelimiterNotFound:
                    await self._answer_too_long(io)
                    if not await self._skip_line(io):
                        _log.warning("rpc.protocol_error", code=INVALID_REQUEST, reason="no resync")
                        return
                    continue
                if line is None:
                    return
                if len(line) > self._max_line_bytes:
                    await self._answer_too_long(io)
                    continue
                if not line.strip():
                    continue
                response = await self._respond(line, peer)
                if response is not None:
                    await io.send(response)

    async def _refuse(self, io: Framed, peer: Peer | None) -> None:
        _log.warning(
            "rpc.peer_refused",
            uid=None if peer is None else peer.uid,
            pid=None if peer is None else peer.pid,
        )
        try:
            line = await self._receive_line(io)
        except anyio.DelimiterNotFound:
            line = b""
        if line is not None:
            refusal = RpcError(PEER_NOT_ALLOWED, "peer not allowed")
            await io.send(encode_error(peek_id(line), refusal))

    async def _receive_line(self, io: Framed) -> bytes | None:
        """The next line (possibly over the limit), or None at end of stream.

        Raises:
            DelimiterNotFound: When no newline comes within the limit; the bytes stay
                buffered for ``_skip_line``.
        """
        try:
            return await io.line(self._max_line_bytes + 1)
        except anyio.IncompleteRead:
            return None

    async def _skip_line(self, io: Framed) -> bool:
        """Drop the rest of an oversized line; False when the stream ends or never resyncs."""
        skipped = 0
        while True:
            skipped += io.discard()
            if skipped > _MAX_SKIP_BYTES:
                return False
            try:
                await io.line(self._max_line_bytes + 1)
            except anyio.DelimiterNotFound:
                continue
            except anyio.IncompleteRead:
                return False
            return True

    async def _answer_too_long(self, io: Framed) -> None:
        _log.warning("rpc.protocol_error", code=INVALID_REQUEST, reason="line too long")
        await io.send(encode_error(None, _TOO_LONG))

    async def _respond(self, line: bytes, peer: Peer) -> bytes | None:
        """The response line to one request line, or None for notifications only."""
        try:
            decoded = decode_request(line)
        except RequestError as exc:
            _log.warning("rpc.protocol_error", code=exc.code, reason=exc.message)
            return encode_error(exc.request_id, exc)
        if not isinstance(decoded, list):
            return await self._answer(decoded, peer)
        # A batch is answered in order, each request as if it came alone; notifications in it
        # get nothing, and a batch of notifications gets no line at all.
        responses = []
        for item in decoded:
            if isinstance(item, RequestError):
                _log.warning("rpc.protocol_error", code=item.code, reason=item.message)
                response: bytes | None = encode_error(item.request_id, item)
            else:
                response = await self._answer(item, peer)
            if response is not None:
                responses.append(response)
        return encode_batch(responses) if responses else None

    def _bind(self, request: Request) -> Params:
        spec = self._specs.get(request.method)
        if spec is None:
            return Params.from_json(request.params)
        return spec.signature.bind(request.params)

    async def _answer(self, request: Request, peer: Peer) -> bytes | None:
        """The response line to one request, or None for a notification."""
        handler = self._handlers.get(request.method)
        error: RpcError
        if handler is None:
            _log.warning("rpc.protocol_error", code=METHOD_NOT_FOUND, reason="unknown method")
            error = RpcError(METHOD_NOT_FOUND, "method not found")
        else:
            try:
                result = await handler(self._bind(request), peer)
            except RpcError as exc:
                if exc.code == INVALID_PARAMS:
                    field = exc.data.get("field") if exc.data else None
                    _log.warning(
                        "rpc.protocol_error", code=exc.code, method=request.method, field=field
                    )
                error = exc
            except Exception:
                _log.exception("rpc.handler_failed", method=request.method)
                error = _INTERNAL
            else:
                if request.is_notification:
                    return None
                try:
                    return encode_result(request.id, result)
                except (TypeError, ValueError, RecursionError):
                    _log.exception("rpc.result_unencodable", method=request.method)
                    error = _INTERNAL
        if request.is_notification:
            return None
        try:
            return encode_error(request.id, error)
        except (TypeError, ValueError, RecursionError):
            _log.exception("rpc.error_unencodable", method=request.method)
            return encode_error(request.id, _INTERNAL)
