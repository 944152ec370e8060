"""The sandbox as a raw ASGI application: routing, form parsing, faults and envelopes.

A thin shell: ``respond`` turns one parsed request into a reply synchronously, and
``SandboxApp`` only moves bytes, sleeps for latency and timeouts, and speaks ASGI.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

import anyio
import structlog

from aisd.sandbox import _data, _xml
from aisd.sandbox._config import DEFAULT_TARGET, REUSE_COMMAND, REUSE_GARBAGE, ApiError
from aisd.sandbox._state import Fault, MintedConsent, Sandbox

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Every path the sandbox serves, in one place: the least certain ones (reuse, revoke) included.
PATHS: Mapping[str, str] = MappingProxyType(
    {
        "mock_session": "/v1/mock-session.xml",
        "default_import": "/v1/command/default-import.xml",
        "get_command": "/v1/command/{id}.xml",
        "reuse": "/v1/command/reuse-multiple-access.xml",
        "revoke": "/v1/command/delete-multiple-access.xml",
        "owner_scores": "/v1/owner-scores.xml",
    }
)
# Test controls, not part of Kontomatik's API (``aisd sandbox-ctl``): JSON in and out.
CONTROL_PATHS: Mapping[str, str] = MappingProxyType(
    {
        "status": "/sandbox/status",
        "mint": "/sandbox/mint",
        "advance": "/sandbox/advance",
        "faults": "/sandbox/faults",
        "kill": "/sandbox/kill-tokens",
        "stats": "/sandbox/stats",
    }
)
# The controls that only read (GET); the others change the sandbox (POST).
_READ_CONTROLS = frozenset({"status", "stats"})
_JSON = "application/json"
_log = structlog.get_logger("aisd.sandbox")

MAX_BODY_BYTES = 64 * 1024
MAX_ACCOUNTS = 20
_XML = "application/xml; charset=utf-8"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE_FALSE = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request: ``raw_params`` is the form body (POST) or the query string (GET)."""

    method: str
    path: str
    api_key: str | None
    raw_params: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP reply; ``fault`` tells the shell to withhold it (timeout) before sending."""

    status: int
    body: bytes
    content_type: str = _XML
    fault: Fault | None = None


def parse_params(raw: bytes) -> dict[str, str]:
    """Form or query fields; the first value of a repeated field wins."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("InvalidParameter", "The request is not valid UTF-8.") from None
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise ApiError("InvalidParameter", f"Parameter {name} is missing.")
    return value


def _date(params: Mapping[str, str], name: str) -> date:
    value = _required(params, name)
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError("InvalidParameter", f"Parameter {name} must be a YYYY-MM-DD date.") from None


def _accounts(params: Mapping[str, str]) -> int | tuple[str, ...] | None:
    value = params.get("accounts", "").strip()
    if not value:
        return None
    if value.isdigit():
        count = int(value)
        if not 1 <= count <= MAX_ACCOUNTS:
            raise ApiError("InvalidParameter", f"Parameter accounts must be 1..{MAX_ACCOUNTS}.")
        return count
    ibans = tuple(part.strip() for part in value.split(","))
    if not all(_data.is_valid_pl_iban(iban) for iban in ibans):
        raise ApiError("InvalidParameter", "Parameter accounts must list valid PL IBANs.")
    return ibans


def _mock_session(sandbox: Sandbox, params: Mapping[str, str], _: re.Match[str]) -> bytes:
    owner = _required(params, "ownerExternalId")
    mode = params.get("multipleAccess", "false").strip().lower()
    if mode not in _TRUE_FALSE:
        raise ApiError("InvalidParameter", "Parameter multipleAccess must be true or false.")
    consent = sandbox.mint_consent(
        owner,
        multiple_access=_TRUE_FALSE[mode],
        accounts=_accounts(params),
        target=params.get("target", "").strip() or DEFAULT_TARGET,
    )
    return _xml.session_reply(
        sandbox.clock(),
        session_id=consent.session_id,
        signature=consent.signature,
        multiple_access_id=consent.multiple_access_id,
        owner_external_id=owner,
    )


def _default_import(sandbox: Sandbox, params: Mapping[str, str], _: re.Match[str]) -> bytes:
    command = sandbox.default_import(
        _required(params, "sessionId"),
        _required(params, "sessionIdSignature"),
        _date(params, "since"),
    )
    return _xml.command_reply(202, command, sandbox.clock())


def _get_command(sandbox: Sandbox, _: Mapping[str, str], match: re.Match[str]) -> bytes:
    parked = sandbox.reuse_command(match["id"])
    if parked is not None:
        session, ready = parked
        return _xml.reuse_command_reply(
            sandbox.clock(),
            command_id=match["id"],
            state="successful" if ready else "in_progress",
            session=(session.session_id, session.signature) if ready else None,
            owner_external_id=sandbox.config.owner_echo(session.owner_external_id),
        )
    # Real Get Import Result replies carry no ownerExternalId on their root, unlike the 202.
    command = replace(sandbox.get_command(match["id"]), owner_external_id=None)
    return _xml.command_reply(
        200, command, sandbox.clock(), split_owners=sandbox.config.split_owner_blocks
    )


def _reuse(sandbox: Sandbox, params: Mapping[str, str], _: re.Match[str]) -> bytes:
    session = sandbox.reuse(_required(params, "multipleAccessId"))
    shape = sandbox.config.reuse_shape
    if shape == REUSE_GARBAGE:
        return _xml.garbage_reply(sandbox.clock())
    if shape == REUSE_COMMAND:
        return _xml.reuse_command_reply(
            sandbox.clock(),
            command_id=sandbox.park_reuse(session),
            state="in_progress",
            session=None,
            owner_external_id=sandbox.config.owner_echo(session.owner_external_id),
        )
    return _xml.session_reply(
        sandbox.clock(),
        session_id=session.session_id,
        signature=session.signature,
        multiple_access_id=None,
        owner_external_id=sandbox.config.owner_echo(session.owner_external_id),
    )


def _revoke(sandbox: Sandbox, params: Mapping[str, str], _: re.Match[str]) -> bytes:
    token = _required(params, "multipleAccessId")
    owner = sandbox.owner_of_token(token)
    sandbox.revoke(token)
    return _xml.empty_reply(sandbox.clock(), owner_external_id=owner)


def _owner_scores(sandbox: Sandbox, params: Mapping[str, str], _: re.Match[str]) -> bytes:
    owner = _required(params, "ownerExternalId")
    if not sandbox.config.score_unimported_owners and not sandbox.has_imported(owner):
        raise ApiError("NoDataToCalculateScore", "There is no data to calculate a score.")
    score, percentile, tier = _data.owner_score(sandbox.config.seed, owner)
    return _xml.owner_scores_reply(
        sandbox.clock(), owner_external_id=owner, score=score, percentile=percentile, tier=tier
    )


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Sandbox, Mapping[str, str], re.Match[str]], bytes]
    faulty: bool  # transport faults apply (not to the test-only Mock Session)
    status: int = 200


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(re.escape(path).replace(re.escape("{id}"), r"(?P<id>\d+)"))


_ROUTES = (
    _Route("POST", _pattern(PATHS["mock_session"]), _mock_session, faulty=False),
    _Route("POST", _pattern(PATHS["default_import"]), _default_import, faulty=True, status=202),
    _Route("GET", _pattern(PATHS["get_command"]), _get_command, faulty=True),
    _Route("POST", _pattern(PATHS["reuse"]), _reuse, faulty=True),
    _Route("POST", _pattern(PATHS["revoke"]), _revoke, faulty=True),
    _Route("GET", _pattern(PATHS["owner_scores"]), _owner_scores, faulty=False),
)

_GATEWAY_HTML = b"<html><body><h1>%d %s</h1></body></html>\n"


def _bare(code: int) -> bytes:
    return _GATEWAY_HTML % (code, _xml.status_line(code).split(" ", 1)[1].encode())


def _json_reply(status: int, value: object) -> Reply:
    return Reply(status, json.dumps(value, ensure_ascii=False).encode() + b"\n", _JSON)


def _number(params: Mapping[str, str], name: str) -> float:
    try:
        return float(params[name])
    except (KeyError, ValueError):
        raise ValueError(f"{name} must be a number") from None


def _control(sandbox: Sandbox, request: Request) -> Reply:
    """One test control: mint a consent, advance the clock, set faults, kill tokens, status."""
    params = parse_params(request.raw_params)
    action = next((a for a, p in CONTROL_PATHS.items() if p == request.path), None)
    if action is None:
        return _json_reply(404, {"error": "no such control"})
    if (action in _READ_CONTROLS) != (request.method == "GET"):
        return _json_reply(405, {"error": f"{request.method} is not allowed here"})
    try:
        if action == "mint":
            owner = params.get("ownerExternalId", "").strip()
            if not owner:
                raise ValueError("ownerExternalId is required")
            minted = sandbox.mint_consent(
                owner,
                multiple_access=params.get("multipleAccess", "true") != "false",
                accounts=_accounts(params),
            )
            return _json_reply(200, consent_json(minted))
        if action == "advance":
            moved = sandbox.advance(timedelta(seconds=_number(params, "seconds")))
            return _json_reply(200, {"now": moved.isoformat()})
        if action == "faults":
            sandbox.set_faults({name: _number(params, name) for name in params})
            return _json_reply(200, {"faults": sandbox.faults()})
        if action == "kill":
            owner = params.get("ownerExternalId", "").strip()
            if not owner:
                raise ValueError("ownerExternalId is required")
            return _json_reply(200, {"killed": sandbox.kill_tokens(owner)})
        if action == "stats":
            return _json_reply(200, sandbox.records())
    except ValueError as exc:
        return _json_reply(400, {"error": str(exc)})
    except ApiError as exc:
        return _json_reply(400, {"error": exc.message})
    return _json_reply(200, sandbox.summary())


def consent_json(minted: MintedConsent) -> dict[str, Any]:
    """A minted consent as the widget's ``onSuccess`` would hand it over (secrets included:
    the caller stands in for the integrator)."""
    return {
        "ownerExternalId": minted.owner_external_id,
        "sessionId": minted.session_id,
        "sessionIdSignature": minted.signature,
        "multipleAccessId": minted.multiple_access_id,
        "target": minted.target,
    }


def respond(sandbox: Sandbox, request: Request) -> Reply:
    """The sandbox's reply to one request, with the fault (if any) the shell must play."""
    now = sandbox.clock()
    if not sandbox.authorized(request.api_key):
        return Reply(401, _xml.unauthorized_reply(now))
    if request.path.startswith("/sandbox/"):
        return _control(sandbox, request)
    allowed = [(r, m) for r in _ROUTES if (m := r.pattern.fullmatch(request.path)) is not None]
    chosen = [(r, m) for r, m in allowed if r.method == request.method]
    if not chosen:
        name, message = (
            ("MethodNotAllowed", f"{request.method} is not allowed here.")
            if allowed
            else ("NotFound", "No such endpoint.")
        )
        error = ApiError(name, message)
        return Reply(error.status, _xml.error_reply(error.status, name, message, now))
    route, match = chosen[0]
    fault = sandbox.draw_fault() if route.faulty else None
    if fault is Fault.SERVER_ERROR:
        return Reply(503, _bare(503), "text/html")
    try:
        status, body = route.status, route.handler(sandbox, parse_params(request.raw_params), match)
    except ApiError as error:
        status, body = error.status, _xml.error_reply(error.status, error.name, error.message, now)
    if fault is Fault.MALFORMED:
        return Reply(status, body[: len(body) // 2])
    if fault is Fault.TIMEOUT:
        return Reply(504, _bare(504), "text/html", fault=fault)
    return Reply(status, body)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class SandboxApp:
    """The ASGI application serving a ``Sandbox`` (in-process via ``InProcessTransport``,
    or over HTTP via uvicorn).

    Args:
        sandbox: the state and rules to serve.
        log_requests: log one ``sandbox.request`` line per request (method, path, status,
            milliseconds); ``aisd sandbox`` does, the embedded sandbox does not.
    """

    def __init__(self, sandbox: Sandbox, *, log_requests: bool = False) -> None:
        self.sandbox = sandbox
        self._log_requests = log_requests

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        config = self.sandbox.config
        began = time.monotonic()
        body = await _read_body(receive)
        if body is None:
            reply = Reply(413, _bare(413), "text/html")
        else:
            # The last of a repeated header wins, as in a dict of them.
            api_key = None
            for name, value in scope["headers"]:
                if name.lower() == b"x-api-key":
                    api_key = value
            if config.latency_seconds > 0:
                await anyio.sleep(config.latency_seconds)
            request = Request(
                method=scope["method"],
                path=scope["path"],
                api_key=api_key.decode("latin-1") if api_key is not None else None,
                raw_params=body if scope["method"] == "POST" else scope.get("query_string", b""),
            )
            reply = respond(self.sandbox, request)
        if reply.fault is Fault.TIMEOUT:
            await anyio.sleep(config.timeout_fault_seconds)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    (b"content-length", str(len(reply.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
        if self._log_requests:
            _log.info(
                "sandbox.request",
                method=scope["method"],
                path=scope["path"],
                status=reply.status,
                ms=round(1000 * (time.monotonic() - began), 1),
            )
