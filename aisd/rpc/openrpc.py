"""The OpenRPC document of the socket, generated from the methods' own definitions.

Each method is described once, by a :class:`MethodSpec`: its :class:`~aisd.rpc._params.Signature`
(the same objects that validate requests), the JSON Schema of its result and the application
errors it may answer. :func:`document` turns the specs into an OpenRPC 1.3 document, which the
server answers to ``rpc.discover``. docs/api.md is the prose reference of the same surface.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aisd.rpc._errors import INTERNAL_ERROR, INVALID_PARAMS
from aisd.rpc._params import Signature

__all__ = ["DISCOVER", "OPENRPC_VERSION", "ErrorSpec", "MethodSpec", "document"]

OPENRPC_VERSION = "1.3.2"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """An error a method may answer: its code, its fixed message and what ``data`` holds."""

    code: int
    message: str
    data: str | None = None


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One method of the socket, as documented.

    Attributes:
        name: The method name.
        summary: One line saying what it does.
        signature: Its params (validation, by-position order).
        result: The JSON Schema of its result.
        errors: The application errors it may answer, beyond the ones every method may
            (-32602 invalid params, -32603 internal error, -32030 storage unavailable).
        description: More detail, when the summary is not enough.
    """

    name: str
    summary: str
    signature: Signature
    result: Mapping[str, object]
    errors: tuple[ErrorSpec, ...] = ()
    description: str = ""


# Every method may answer these; listing them on each keeps every method entry self-contained.
_COMMON_ERRORS = (
    ErrorSpec(INVALID_PARAMS, "invalid params: ...", "{field}: the param at fault"),
    ErrorSpec(INTERNAL_ERROR, "internal error"),
)

DISCOVER = MethodSpec(
    name="rpc.discover",
    summary="This document: the OpenRPC description of every method the socket serves.",
    signature=Signature(by_position=True),
    result={"type": "object", "description": "An OpenRPC 1.3 document."},
)


def _error_json(error: ErrorSpec) -> dict[str, object]:
    out: dict[str, object] = {"code": error.code, "message": error.message}
    if error.data is not None:
        out["data"] = error.data
    return out


def _method_json(spec: MethodSpec, common: tuple[ErrorSpec, ...]) -> dict[str, object]:
    sig = spec.signature
    description = spec.description
    if sig.exactly_one:
        rule = "Exactly one of " + " or ".join(f"`{n}`" for n in sig.exactly_one) + " is required."
        description = f"{description} {rule}".strip()
    out: dict[str, object] = {
        "name": spec.name,
        "summary": spec.summary,
        "paramStructure": "either" if sig.by_position else "by-name",
        "params": [
            {
                "name": field.name,
                "description": field.description,
                "required": field.required,
                "schema": field.json_schema(),
            }
            for field in sig.fields
        ],
        "result": {"name": "result", "schema": dict(spec.result)},
        "errors": [_error_json(e) for e in (*spec.errors, *common)],
    }
    if description:
        out["description"] = description
    return out


def document(
    specs: Iterable[MethodSpec],
    *,
    version: str,
    common_errors: Iterable[ErrorSpec] = (),
) -> dict[str, object]:
    """The OpenRPC document of ``specs``, sorted by method name, ``rpc.discover`` included.

    Args:
        specs: The methods the server serves.
        version: The API's version (``info.version``).
        common_errors: Errors every method may answer, beyond -32602 and -32603.

    Returns:
        A JSON-serialisable OpenRPC 1.3 document.
    """
    common = (*_COMMON_ERRORS, *common_errors)
    methods = {spec.name: spec for spec in specs}
    methods.setdefault(DISCOVER.name, DISCOVER)
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "aisd",
            "version": version,
            "description": (
                "The local JSON-RPC 2.0 socket of aisd: one request or batch per line. "
                "The prose reference is docs/api.md in the repository."
            ),
            "license": {"name": "MIT"},
        },
        "servers": [{"name": "aisd", "url": "unix:/run/aisd/aisd.sock"}],
        "methods": [_method_json(methods[name], common) for name in sorted(methods)],
    }
