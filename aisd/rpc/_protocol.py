"""The JSON-RPC 2.0 wire format: decoding one request line, encoding one response line.

A line holds one request object or a batch (an array of them); see docs/api.md, "Framing".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn

from aisd.rpc._errors import INVALID_REQUEST, PARSE_ERROR, RpcError

# A fractional id is kept as the Decimal it was written as, so it is echoed digit for digit.
RequestId = str | int | Decimal | None


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request.

    Attributes:
        id: The request id (``None`` for a notification or an explicit null id).
        is_notification: True when the request had no ``id`` member: it gets no response.
        method: The method name.
        params: The ``params`` member: a dict or a list, ``{}`` when absent; not yet validated.
    """

    id: RequestId
    is_notification: bool
    method: str
    params: dict[str, object] | list[object]


class RequestError(RpcError):
    """A request that could not be decoded; answered with ``request_id`` (often null)."""

    def __init__(self, code: int, message: str, request_id: RequestId = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


Batch = list[Request | RequestError]


def _refuse_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; Python's decoder would accept them.
    raise ValueError(name)


# Built once: json.loads and json.dumps given options build a new decoder or encoder per call,
# which costs more than decoding or encoding a request line.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=Decimal)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _valid_id(value: object) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return value is None or isinstance(value, str) or type(value) is int


def decode_request(line: bytes) -> Request | Batch:
    """Decode one request line: a request object, or a batch of them.

    Args:
        line: The line without its ``\\n``.

    Returns:
        The request, or for a batch one decoded request or refusal per element, in order.

    Raises:
        RequestError: -32700 for bytes that are not UTF-8 JSON, -32600 for JSON that is
            neither a valid request object nor a non-empty array; ``request_id`` is set when
            it was valid.
    """
    try:
        message = _DECODER.decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(PARSE_ERROR, "parse error") from None
    if isinstance(message, list):
        if not message:
            raise RequestError(INVALID_REQUEST, "invalid request: empty batch")
        batch: Batch = []
        for element in message:
            try:
                batch.append(_request(element))
            except RequestError as exc:
                batch.append(exc)
        return batch
    return _request(message)


def _request(message: object) -> Request:
    if not isinstance(message, dict):
        raise RequestError(INVALID_REQUEST, "invalid request: not an object")
    has_id = "id" in message
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'id' must be a string, a number or null"
        )
    if message.get("jsonrpc") != "2.0":
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'jsonrpc' must be \"2.0\"", request_id
        )
    method = message.get("method")
    if not isinstance(method, str):
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'method' must be a string", request_id
        )
    params = message.get("params", {})
    if not isinstance(params, dict | list):
        raise RequestError(
            INVALID_REQUEST, "invalid request: 'params' must be an object or an array", request_id
        )
    return Request(id=request_id, is_notification=not has_id, method=method, params=params)


def peek_id(line: bytes) -> RequestId:
    """Best-effort id of a line, for answering a request that is refused unread.

    Args:
        line: The line without its ``\\n``.

    Returns:
        The id when the line is a request object with a valid id, else ``None`` (a batch
        included).
    """
    try:
        decoded = decode_request(line)
    except RequestError as exc:
        return exc.request_id
    return None if isinstance(decoded, list) else decoded.id


def _dump(value: object) -> str:
    return _ENCODER.encode(value)


def _response(request_id: RequestId, member: str, value: object) -> bytes:
    # The id is written by hand so that a fractional id keeps the digits it came with.
    if request_id is None:
        id_text = "null"
    elif type(request_id) is int or isinstance(request_id, Decimal):
        id_text = str(request_id)
    else:
        id_text = _dump(request_id)
    text = f'{{"jsonrpc":"2.0","id":{id_text},"{member}":{_dump(value)}}}'
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
    return _response(request_id, "result", result)


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
    return _response(request_id, "error", body)


def encode_batch(responses: list[bytes]) -> bytes:
    """Join the response lines of a batch into one array line.

    Args:
        responses: The ``\\n``-terminated response lines, at least one.

    Returns:
        The batch response line, ``\\n``-terminated.
    """
    return b"[" + b",".join(line.rstrip(b"\n") for line in responses) + b"]\n"
