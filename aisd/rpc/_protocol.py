"""The JSON-RPC 2.0 wire format: decoding one request line, encoding one response line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NoReturn

from aisd.rpc._errors import INVALID_REQUEST, PARSE_ERROR, RpcError

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request.

    Attributes:
        id: The request id (``None`` for a notification or an explicit null id).
        is_notification: True when the request had no ``id`` member: it gets no response.
        method: The method name.
        params: The ``params`` member, ``{}`` when absent; not yet validated.
    """

    id: RequestId
    is_notification: bool
    method: str
    params: object


class RequestError(RpcError):
    """A request that could not be decoded; answered with ``request_id`` (often null)."""

    def __init__(self, code: int, message: str, request_id: RequestId = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def _refuse_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; Python's decoder would accept them.
    raise ValueError(name)


def _valid_id(value: object) -> bool:
    return value is None or isinstance(value, str) or type(value) is int


def decode_request(line: bytes) -> Request:
    """Decode one request line.

    Args:
        line: The line without its ``\\n``.

    Returns:
        The request.

    Raises:
        RequestError: -32700 for bytes that are not UTF-8 JSON, -32600 for JSON that is
            not a single valid request object; ``request_id`` is set when it was valid.
    """
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(PARSE_ERROR, "parse error") from None
    if isinstance(message, list):
        raise RequestError(INVALID_REQUEST, "invalid request: batches are not supported")
    if not isinstance(message, dict):
        raise RequestError(INVALID_REQUEST, "invalid request: not an object")
    has_id = "id" in message
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise RequestError(INVALID_REQUEST, "invalid request: 'id' must be a string or integer")
    if message.get("jsonrpc") != "2.0":
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'jsonrpc' must be \"2.0\"", request_id
        )
    method = message.get("method")
    if not isinstance(method, str):
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'method' must be a string", request_id
        )
    return Request(
        id=request_id,
        is_notification=not has_id,
        method=method,
        params=message.get("params", {}),
    )


def peek_id(line: bytes) -> RequestId:
    """Best-effort id of a line, for answering a request that is refused unread.

    Args:
        line: The line without its ``\\n``.

    Returns:
        The id when the line is a request object with a valid id, else ``None``.
    """
    try:
        return decode_request(line).id
    except RequestError as exc:
        return exc.request_id


def _dump(message: dict[str, object]) -> bytes:
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def encode_result(request_id: RequestId, result: object) -> bytes:
    """Encode a success response line.

    Args:
        request_id: The request's id.
        result: The handler's JSON-serialisable result.

    Returns:
        The response line, ``\\n``-terminated.

    Raises:
        TypeError: When ``result`` is not JSON-serialisable.
        ValueError: When ``result`` holds NaN/Infinity or a cycle.
    """
    return _dump({"jsonrpc": "2.0", "id": request_id, "result": result})


def encode_error(request_id: RequestId, error: RpcError) -> bytes:
    """Encode an error response line.

    Args:
        request_id: The request's id, ``None`` when it could not be read.
        error: The error to report.

    Returns:
        The response line, ``\\n``-terminated.

    Raises:
        TypeError: When ``error.data`` is not JSON-serialisable.
        ValueError: When ``error.data`` holds NaN/Infinity or a cycle.
    """
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return _dump({"jsonrpc": "2.0", "id": request_id, "error": body})
