"""JSON-RPC error codes and the exception handlers raise to answer with one."""

from __future__ import annotations

from collections.abc import Mapping

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PEER_NOT_ALLOWED = -32001
NOT_FOUND = -32004
CONFLICT = -32009
BUSY = -32029


class RpcError(Exception):
    """An error answered to the caller as a JSON-RPC error object.

    The message and data are sent to the peer verbatim, so they must never hold a secret
    or a value the caller supplied.

    Args:
        code: The JSON-RPC error code, one of the module constants or another in
            -32000..-32099.
        message: A short, fixed description of the error.
        data: Optional JSON-serialisable details, e.g. ``{"field": "tokenId"}``.
    """

    def __init__(self, code: int, message: str, data: Mapping[str, object] | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = dict(data) if data is not None else None

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r}, data={self.data!r})"
