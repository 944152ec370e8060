"""Clients of the aisd socket, for the integrator's web backend and the ``aisd`` CLI.

The daemon speaks newline-delimited JSON-RPC 2.0 on a Unix stream socket: one request object per
line, one response per line. Two flavours, with the same methods:

* :class:`Client`, synchronous, standard library only (``socket`` and ``json``): safe to share
  between threads, since every call uses its own short-lived connection.
* :class:`AsyncClient`, for anyio/asyncio code; likewise one connection per call, so concurrent
  calls from many tasks need no locking.

Typical use, in the handler of the Kontomatik SignIn widget's ``onSuccess``::

    from aisd.client import Client, RpcError

    client = Client("/run/aisd/aisd.sock")
    ids = client.submit_consent(
        user.id, session_id, session_id_signature, multiple_access_id=options_multiple_access_id
    )
    # ids == {"importId": "...", "tokenId": "..."}; repeat-safe per session_id.

Errors: :class:`DaemonUnavailable` (no daemon at the path, refused, timed out),
:class:`RpcError` (the daemon answered with a JSON-RPC error: ``code``, ``message``, ``data``),
:class:`ProtocolError` (an answer that is not valid JSON-RPC). All derive from :class:`ClientError`.
The calling process's uid or gid must be in ``AISD_ALLOWED_UIDS`` / ``AISD_ALLOWED_GIDS``
(else ``RpcError`` -32001).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import anyio

from aisd.settings import default_socket_path

__all__ = [
    "MAX_REQUEST_BYTES",
    "AsyncClient",
    "Client",
    "ClientError",
    "DaemonUnavailable",
    "ProtocolError",
    "RpcError",
    "decode_response",
    "encode_request",
    "resolve_socket_path",
]

MAX_REQUEST_BYTES = 64 * 1024
"""The daemon refuses request lines longer than this (newline included)."""

# Replies (``owner.data`` of a busy owner) can be large; this only stops a runaway peer.
_MAX_REPLY_BYTES = 512 * 1024 * 1024
_CHUNK = 64 * 1024
_ids = itertools.count(1)


class ClientError(Exception):
    """Base of every error raised by the clients."""


class DaemonUnavailable(ClientError):
    """The daemon could not be reached (or did not answer) at ``socket_path``."""

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__(f"aisd daemon not reachable at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason


class ProtocolError(ClientError):
    """The daemon's answer was not a valid JSON-RPC 2.0 response to our request."""


class RpcError(ClientError):
    """The daemon answered with a JSON-RPC error object.

    Attributes:
        code: -32700..-32600 for protocol errors; -32001 peer not allowed, -32004 not found,
            -32009 conflict, -32029 busy (``data.nextPossibleAt`` says when to retry).
        message: The daemon's text (never contains a secret).
        data: Extra structured detail, or ``None``.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def resolve_socket_path(socket_path: str | os.PathLike[str] | None = None) -> Path:
    """The socket to use: the argument, else ``$AISD_SOCKET_PATH``, else the settings default
    (``$RUNTIME_DIRECTORY/aisd.sock``, else ``./aisd.sock``)."""
    if socket_path is not None:
        return Path(socket_path)
    from_env = os.environ.get("AISD_SOCKET_PATH")
    return Path(from_env) if from_env else default_socket_path()


def encode_request(request_id: int, method: str, params: Mapping[str, Any] | None) -> bytes:
    """One JSON-RPC 2.0 request line.

    Raises:
        ValueError: The line would exceed :data:`MAX_REQUEST_BYTES`.
    """
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        request["params"] = dict(params)
    line = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(f"{method}: request of {len(line)} bytes exceeds {MAX_REQUEST_BYTES}")
    return line


def decode_response(line: bytes, request_id: int) -> Any:
    """The ``result`` of a response line.

    Raises:
        RpcError: The response carries an error object.
        ProtocolError: The line is not a JSON-RPC 2.0 response to ``request_id``.
    """
    try:
        response = json.loads(line)
    except ValueError:
        raise ProtocolError("the daemon's answer is not JSON") from None
    if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
        raise ProtocolError("the daemon's answer is not a JSON-RPC 2.0 response")
    error = response.get("error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise ProtocolError("the daemon's error object is malformed")
        raise RpcError(error["code"], str(error.get("message", "")), error.get("data"))
    if response.get("id") != request_id:
        raise ProtocolError(f"answer to request {response.get('id')!r}, expected {request_id}")
    if "result" not in response:
        raise ProtocolError("the daemon's answer has neither result nor error")
    return response["result"]


def _params(**values: Any) -> dict[str, Any]:
    """Drop unset optional params; dates become ISO strings."""
    return {
        key: value.isoformat() if isinstance(value, date) else value
        for key, value in values.items()
        if value is not None
    }


def _consent_params(
    owner_external_id: str,
    session_id: str,
    session_id_signature: str,
    multiple_access_id: str | None,
    target: str | None,
    refresh_until: date | str | None,
    max_imports: int | None,
) -> dict[str, Any]:
    return _params(
        ownerExternalId=owner_external_id,
        sessionId=session_id,
        sessionIdSignature=session_id_signature,
        multipleAccessId=multiple_access_id,
        target=target,
        refreshUntil=refresh_until,
        maxImports=max_imports,
    )


class Client:
    """Synchronous client (standard library only); one connection per call, thread-safe.

    Args:
        socket_path: The daemon's socket; see :func:`resolve_socket_path` for the default.
        timeout: Seconds to wait for connecting and for the answer.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its ``result``.

        Raises:
            DaemonUnavailable: Connecting failed, or no answer within ``timeout``.
            RpcError: The daemon answered with an error.
            ProtocolError: The answer was malformed.
        """
        request_id = next(_ids)
        line = encode_request(request_id, method, params)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(os.fspath(self.socket_path))
                sock.sendall(line)
                reply = _read_line(sock)
        except TimeoutError:
            raise DaemonUnavailable(self.socket_path, "no answer in time") from None
        except OSError as exc:
            raise DaemonUnavailable(self.socket_path, exc.strerror or str(exc)) from None
        return decode_response(reply, request_id)

    def submit_consent(
        self,
        owner_external_id: str,
        session_id: str,
        session_id_signature: str,
        *,
        multiple_access_id: str | None = None,
        target: str | None = None,
        refresh_until: date | str | None = None,
        max_imports: int | None = None,
    ) -> dict[str, Any]:
        """``consent.submit``: store a widget consent and start its first import.

        Idempotent per ``session_id``. Returns ``{importId, tokenId}`` (``tokenId`` is ``None``
        without ``multiple_access_id``).
        """
        result: dict[str, Any] = self.call(
            "consent.submit",
            _consent_params(
                owner_external_id,
                session_id,
                session_id_signature,
                multiple_access_id,
                target,
                refresh_until,
                max_imports,
            ),
        )
        return result

    def get_import(self, import_id: str) -> dict[str, Any]:
        """``import.get``: one import (state, polls, counts, error)."""
        result: dict[str, Any] = self.call("import.get", {"importId": import_id})
        return result

    def list_imports(
        self,
        *,
        owner_external_id: str | None = None,
        token_id: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """``import.list``: ``{imports: [...]}``, newest first."""
        result: dict[str, Any] = self.call(
            "import.list",
            _params(ownerExternalId=owner_external_id, tokenId=token_id, state=state, limit=limit),
        )
        return result

    def list_tokens(
        self,
        *,
        owner_external_id: str | None = None,
        state: str | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """``token.list``: ``{tokens: [...]}``; with ``explain``, each token's quota use per
        account (``quota``), the plan's reason and its failure count too."""
        result: dict[str, Any] = self.call(
            "token.list",
            _params(ownerExternalId=owner_external_id, state=state, explain=explain or None),
        )
        return result

    def revoke(
        self, *, token_id: str | None = None, owner_external_id: str | None = None
    ) -> dict[str, Any]:
        """``token.revoke`` of one token or all of an owner's: ``{tokens: [{tokenId, state}]}``."""
        result: dict[str, Any] = self.call(
            "token.revoke", _params(tokenId=token_id, ownerExternalId=owner_external_id)
        )
        return result

    def refresh(self, token_id: str) -> dict[str, Any]:
        """``token.refresh`` now: ``{importId}``; ``RpcError`` -32029 when the quota is spent."""
        result: dict[str, Any] = self.call("token.refresh", {"tokenId": token_id})
        return result

    def owner_data(self, owner_external_id: str) -> dict[str, Any]:
        """``owner.data``: the owner's merged accounts and transactions."""
        result: dict[str, Any] = self.call("owner.data", {"ownerExternalId": owner_external_id})
        return result

    def events(self, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """``events.list``: ``{events: [...], next}``; pass ``next`` as ``after`` to continue."""
        result: dict[str, Any] = self.call("events.list", _params(after=after, limit=limit))
        return result

    def changes(
        self,
        cursor: str | None = None,
        *,
        owner_external_id: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """``data.changes``: ``{added, modified, removed, cursor}`` since ``cursor``."""
        result: dict[str, Any] = self.call(
            "data.changes", _params(cursor=cursor, ownerExternalId=owner_external_id, limit=limit)
        )
        return result

    def forget(self, owner_external_id: str) -> dict[str, Any]:
        """``owner.forget``: revoke and erase the owner: ``{tokensRevoked, rowsDeleted}``."""
        result: dict[str, Any] = self.call("owner.forget", {"ownerExternalId": owner_external_id})
        return result

    def billing_report(self, month: str) -> dict[str, Any]:
        """``billing.report`` for ``YYYY-MM``: cycles and imports, in total and per token."""
        result: dict[str, Any] = self.call("billing.report", {"month": month})
        return result

    def status(self) -> dict[str, Any]:
        """``daemon.status``: version, start time, counts by state, running and queued work."""
        result: dict[str, Any] = self.call("daemon.status")
        return result

    def webhooks(self) -> dict[str, Any]:
        """``webhooks.status``: ``{endpoints: [...]}`` with each cursor, lag and last error."""
        result: dict[str, Any] = self.call("webhooks.status")
        return result

    def redeliver(self, from_id: int, endpoint: str | None = None) -> dict[str, Any]:
        """``webhooks.redeliver``: deliver every event from ``from_id`` on again."""
        result: dict[str, Any] = self.call(
            "webhooks.redeliver", _params(endpoint=endpoint, **{"from": from_id})
        )
        return result


def _read_line(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while True:
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise ConnectionResetError(0, "the daemon closed the connection without answering")
        end = chunk.find(b"\n")
        if end >= 0:
            buffer += chunk[:end]
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > _MAX_REPLY_BYTES:
            raise ConnectionAbortedError(0, "the daemon's answer is too large")


class AsyncClient:
    """Asynchronous client (anyio); one connection per call, safe for concurrent tasks.

    Args:
        socket_path: The daemon's socket; see :func:`resolve_socket_path` for the default.
        timeout: Seconds to wait for connecting and for the answer.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its ``result``; raises like :meth:`Client.call`."""
        request_id = next(_ids)
        line = encode_request(request_id, method, params)
        try:
            with anyio.fail_after(self.timeout):
                async with await anyio.connect_unix(self.socket_path) as stream:
                    await stream.send(line)
                    buffer = bytearray()
                    while (end := buffer.find(b"\n")) < 0:
                        buffer += await stream.receive(_CHUNK)
                        if len(buffer) > _MAX_REPLY_BYTES:
                            raise ConnectionAbortedError(0, "the daemon's answer is too large")
        except TimeoutError:
            raise DaemonUnavailable(self.socket_path, "no answer in time") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            raise DaemonUnavailable(
                self.socket_path, "the daemon closed the connection without answering"
            ) from None
        except OSError as exc:
            raise DaemonUnavailable(self.socket_path, exc.strerror or str(exc)) from None
        return decode_response(bytes(buffer[:end]), request_id)

    async def submit_consent(
        self,
        owner_external_id: str,
        session_id: str,
        session_id_signature: str,
        *,
        multiple_access_id: str | None = None,
        target: str | None = None,
        refresh_until: date | str | None = None,
        max_imports: int | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.submit_consent`."""
        result: dict[str, Any] = await self.call(
            "consent.submit",
            _consent_params(
                owner_external_id,
                session_id,
                session_id_signature,
                multiple_access_id,
                target,
                refresh_until,
                max_imports,
            ),
        )
        return result

    async def get_import(self, import_id: str) -> dict[str, Any]:
        """See :meth:`Client.get_import`."""
        result: dict[str, Any] = await self.call("import.get", {"importId": import_id})
        return result

    async def list_imports(
        self,
        *,
        owner_external_id: str | None = None,
        token_id: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.list_imports`."""
        result: dict[str, Any] = await self.call(
            "import.list",
            _params(ownerExternalId=owner_external_id, tokenId=token_id, state=state, limit=limit),
        )
        return result

    async def list_tokens(
        self,
        *,
        owner_external_id: str | None = None,
        state: str | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """See :meth:`Client.list_tokens`."""
        result: dict[str, Any] = await self.call(
            "token.list",
            _params(ownerExternalId=owner_external_id, state=state, explain=explain or None),
        )
        return result

    async def revoke(
        self, *, token_id: str | None = None, owner_external_id: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`Client.revoke`."""
        result: dict[str, Any] = await self.call(
            "token.revoke", _params(tokenId=token_id, ownerExternalId=owner_external_id)
        )
        return result

    async def refresh(self, token_id: str) -> dict[str, Any]:
        """See :meth:`Client.refresh`."""
        result: dict[str, Any] = await self.call("token.refresh", {"tokenId": token_id})
        return result

    async def owner_data(self, owner_external_id: str) -> dict[str, Any]:
        """See :meth:`Client.owner_data`."""
        result: dict[str, Any] = await self.call(
            "owner.data", {"ownerExternalId": owner_external_id}
        )
        return result

    async def events(self, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """See :meth:`Client.events`."""
        result: dict[str, Any] = await self.call("events.list", _params(after=after, limit=limit))
        return result

    async def changes(
        self,
        cursor: str | None = None,
        *,
        owner_external_id: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.changes`."""
        result: dict[str, Any] = await self.call(
            "data.changes", _params(cursor=cursor, ownerExternalId=owner_external_id, limit=limit)
        )
        return result

    async def forget(self, owner_external_id: str) -> dict[str, Any]:
        """See :meth:`Client.forget`."""
        result: dict[str, Any] = await self.call(
            "owner.forget", {"ownerExternalId": owner_external_id}
        )
        return result

    async def billing_report(self, month: str) -> dict[str, Any]:
        """See :meth:`Client.billing_report`."""
        result: dict[str, Any] = await self.call("billing.report", {"month": month})
        return result

    async def status(self) -> dict[str, Any]:
        """See :meth:`Client.status`."""
        result: dict[str, Any] = await self.call("daemon.status")
        return result
