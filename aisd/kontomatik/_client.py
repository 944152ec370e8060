"""The HTTP client of the Kontomatik API: one ``httpx.AsyncClient``'s transport, five calls.

A thin shell over the pure parsers: it sends form-encoded requests with the ``X-Api-Key``
header, streams every body through a size cap, and turns transport failures and error replies
into the ``KontomatikError`` taxonomy. Secrets it handles (the key, session signatures,
multipleAccessId tokens) are scrubbed from every error it raises, including messages echoed by
upstream, and never appear in its ``repr``.

Requests go to the client's transport directly. The client is built once (its connection pool,
the proxy the environment names, default headers); its per-request machinery (merging the URL
with the base by parsing both, merging headers and cookies, an auth flow, a redirect loop, a
cookie jar fed every reply) cost about 200 µs of CPU a request, for features this API never
uses (no cookies, no redirects followed, no auth but the header).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import date
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
import httpx

from aisd.kontomatik import _paths
from aisd.kontomatik._errors import (
    KontomatikError,
    RetryLaterError,
    UnexpectedReplyError,
    UnknownApiError,
)
from aisd.kontomatik._gzip import GzipWriter
from aisd.kontomatik._models import Command, CommandState, ImportReply, ModelScore, Session
from aisd.kontomatik._parse import (
    ReplyReader,
    parse_command,
    parse_error,
    parse_owner_scores,
    parse_reuse,
)
from aisd.logs import MIN_SECRET_LENGTH, whole_replaced

_REDACTED = "***"


# How long a command-shaped Reuse Multiple Access may take to yield its session.
REUSE_COMMAND_DEADLINE_SECONDS = 120.0

# Slice size for feeding the parser (about 2 ms of parsing each on a small machine).
SLICE_BYTES = 64 * 1024

# Told of every request: (endpoint name, "ok" or the error's name, seconds). For metrics.
CallObserver = Callable[[str, str, float], None]


class KontomatikClient:
    """Client of the Kontomatik API.

    Use as ``async with KontomatikClient(...) as client:``, or call ``aclose`` when done.

    Args:
        base_url: e.g. ``https://test.api.kontomatik.com`` (paths start with ``/v1/``).
        api_key: sent as ``X-Api-Key``; never logged, never in an error or a repr.
        transport: an httpx transport (tests, the in-process sandbox); the network by default.
        timeout: seconds for each of connect, read, write and pool acquisition.
        max_reply_bytes: the largest reply body accepted (``ReplyTooLarge`` beyond it).

    Attributes:
        observer: told of every request's endpoint, outcome and duration (it must not block);
            None by default.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_reply_bytes: int = 64 * 2**20,
    ) -> None:
        self.observer: CallObserver | None = None
        self._base_url = base_url
        self._api_key = api_key
        self._max_reply_bytes = max_reply_bytes
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"X-Api-Key": api_key, "Accept": "application/xml"},
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
        )
        # Every request goes to one origin: the transport the client would pick for it (the
        # pool, or a proxy's from HTTPS_PROXY and friends) is picked once.
        self._base = str(self._http.base_url).rstrip("/") + "/"
        self._transport = self._http._transport_for_url(self._http.base_url)
        self._headers = self._http.headers
        self._ext = {"timeout": self._http.timeout.as_dict()}
        # The fixed endpoints' URLs, parsed once; a command's result URL is parsed per poll.
        self._urls = {path: self._url(path) for path in _paths.FIXED}

    def __repr__(self) -> str:
        return f"KontomatikClient(base_url={self._base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def default_import(self, session: Session, since: date) -> Command:
        """Start a Default Import on a session (one per session).

        Args:
            session: the session from the widget or from ``reuse_multiple_access``.
            since: the oldest day of history wanted.

        Returns:
            The new command, normally in state ``setup``.

        Raises:
            KontomatikError: a classified error (``SessionDeadError`` for a used or expired
                session, ``RetryLaterError`` for transport failures...).
        """
        form = {
            "sessionId": session.session_id,
            "sessionIdSignature": session.signature,
            "since": since.isoformat(),
        }
        secrets = (self._api_key, session.signature)
        body = await self._call("POST", _paths.DEFAULT_IMPORT, form=form, secrets=secrets)
        try:
            _, command = parse_command([body], max_bytes=self._max_reply_bytes)
        except KontomatikError as exc:
            raise _redact_error(exc, secrets) from None
        return _redact_command(command, secrets)

    async def get_import_result(
        self,
        command_id: str,
        *,
        on_final: Callable[[CommandState], None] | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> ImportReply:
        """Poll a command; the body is parsed and gzip-compressed while it streams in.

        Args:
            command_id: the command's id.
            on_final: called once, as soon as the reply shows the command in a final state:
                before the rest of the body (a result may take a while to read), so the caller
                can hand the command's slot on meanwhile.
            pace: awaited after each slice of the body is parsed: the caller may hold a large
                reply's parsing back while more urgent work needs the CPU.

        Returns:
            The command, and the compressed body when the command ended ``successful``.

        Raises:
            KontomatikError: a classified error.
        """
        reader = ReplyReader(max_bytes=self._max_reply_bytes)
        writer = GzipWriter()

        told = on_final is None

        def sink(chunk: bytes) -> None:
            nonlocal told
            reader.feed(chunk)
            writer.write(chunk)
            if not told:
                state = reader.command_state()
                if state is not None and state.is_final:
                    told = True
                    assert on_final is not None
                    on_final(state)

        await self._call("GET", _paths.command_result(command_id), sink=sink, pace=pace)
        secrets = (self._api_key,)
        try:
            command = _redact_command(reader.command(reader.close()), secrets)
        except KontomatikError as exc:
            raise _redact_error(exc, secrets) from None
        raw = writer.finish() if command.state is CommandState.SUCCESSFUL else None
        return ImportReply(command=command, raw=raw)

    async def reuse_multiple_access(
        self,
        multiple_access_id: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        poll_seconds: float = 2.0,
        deadline_seconds: float = REUSE_COMMAND_DEADLINE_SECONDS,
    ) -> Session:
        """Open a fresh session from a multiple-access token (counts against the quota).

        Upstream may answer with the session or with a command to poll until it yields one
        (``parse_reuse``): the command is polled every ``poll_seconds`` (transient errors of a
        poll are retried, never the Reuse itself) for at most ``deadline_seconds``.

        Raises:
            KontomatikError: ``TokenDeadError``, ``QuotaError``, ``JobsQuotaExceededError``...
            UnexpectedReplyError: a reply of an unknown shape, or a command that yields no
                session in time; the access is spent and must not be repeated blindly.
        """
        secrets = (self._api_key, multiple_access_id)
        body = await self._call(
            "POST",
            _paths.REUSE_MULTIPLE_ACCESS,
            form={"multipleAccessId": multiple_access_id},
            secrets=(multiple_access_id,),
        )
        answer = _reuse_answer(body, secrets)
        waited = 0.0
        while isinstance(answer, Command):
            if waited >= deadline_seconds:
                raise UnexpectedReplyError(
                    "UnexpectedReply",
                    f"the Reuse Multiple Access command yielded no session in {waited:.0f} s",
                    raw=body,
                )
            await sleep(poll_seconds)
            waited += poll_seconds
            try:
                body = await self._call("GET", _paths.command_result(answer.id), secrets=secrets)
            except RetryLaterError:
                continue  # the poll failed, not the Reuse: ask again after the next interval
            answer = _reuse_answer(body, secrets)
        return answer

    async def revoke_multiple_access(self, multiple_access_id: str) -> None:
        """Revoke a multiple-access token upstream; any 2xx reply, even empty, is success.

        Raises:
            KontomatikError: a classified error.
        """
        await self._call(
            "POST",
            _paths.REVOKE_MULTIPLE_ACCESS,
            form={"multipleAccessId": multiple_access_id},
            secrets=(multiple_access_id,),
        )

    async def owner_scores(self, owner_external_id: str) -> list[ModelScore]:
        """The scoring models' verdicts on an owner.

        Raises:
            KontomatikError: a classified error.
        """
        body = await self._call(
            "GET", _paths.OWNER_SCORES, params={"ownerExternalId": owner_external_id}
        )
        try:
            return parse_owner_scores(body)
        except KontomatikError as exc:
            raise _redact_error(exc, (self._api_key,)) from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        sink: Callable[[bytes], None] | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
        secrets: Iterable[str] = (),
    ) -> bytes:
        """Send one request; stream a 2xx body into ``sink`` (or return it), raise otherwise.
        ``pace`` is awaited after each slice handed to ``sink``."""
        began = time.monotonic()
        try:
            body = await self._exchange(
                method, path, form=form, params=params, sink=sink, pace=pace, secrets=secrets
            )
        except KontomatikError as exc:
            self._tell(path, exc.name, began)
            raise
        self._tell(path, "ok", began)
        return body

    def _tell(self, path: str, outcome: str, began: float) -> None:
        if self.observer is not None:
            self.observer(_paths.endpoint_name(path), outcome, time.monotonic() - began)

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None,
        params: dict[str, str] | None,
        sink: Callable[[bytes], None] | None,
        pace: Callable[[], Awaitable[None]] | None,
        secrets: Iterable[str],
    ) -> bytes:
        secrets = (self._api_key, *secrets)
        try:
            async with self._send(method, path, form=form, params=params) as response:
                if not response.is_success:
                    body = await self._read(response, cap_error=True)
                    raise parse_error(response.status_code, body)
                if sink is None:
                    return await self._read(response, cap_error=False)
                async for chunk in response.aiter_bytes():
                    # A large chunk (a whole reply, from some transports) is handed over in
                    # slices with a checkpoint between them: parsing a big reply must not hold
                    # the event loop, and other imports' polls, for its whole length.
                    for start in range(0, len(chunk), SLICE_BYTES):
                        sink(chunk[start : start + SLICE_BYTES])
                        if pace is not None:
                            await pace()
                        if len(chunk) > SLICE_BYTES:
                            await anyio.lowlevel.checkpoint()
                return b""
        except KontomatikError as exc:
            raise _redact_error(exc, secrets) from None
        except httpx.HTTPError as exc:
            raise _redact_error(_transport_error(exc), secrets) from None

    def _url(self, path: str) -> httpx.URL:
        # As httpx merges a relative URL with the base: appended to the base's path.
        return httpx.URL(self._base + path.lstrip("/"))

    @contextlib.asynccontextmanager
    async def _send(
        self, method: str, path: str, *, form: dict[str, str] | None, params: dict[str, str] | None
    ) -> AsyncIterator[httpx.Response]:
        """The reply to one request, its body still streaming; closed on the way out."""
        url = self._urls.get(path) or self._url(path)
        request = httpx.Request(
            method, url, params=params, data=form, headers=self._headers, extensions=self._ext
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response, *, cap_error: bool) -> bytes:
        """The whole body, refused beyond the size cap (an error body is merely cut)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_reply_bytes:
                if cap_error:
                    break
                raise UnknownApiError(
                    "ReplyTooLarge",
                    f"reply exceeds the limit of {self._max_reply_bytes} bytes",
                    http_status=response.status_code,
                )
            parts.append(chunk)
        return b"".join(parts)


def _reuse_answer(body: bytes, secrets: Iterable[str]) -> Session | Command:
    try:
        return parse_reuse(body)
    except KontomatikError as exc:
        raise _redact_error(exc, secrets) from None


def _transport_error(exc: httpx.HTTPError) -> RetryLaterError:
    """A transport failure as a retry-later error; ``sent`` is False only when provably unsent."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return RetryLaterError("NetworkError", f"could not connect ({detail})", sent=False)
    if isinstance(exc, httpx.PoolTimeout):
        # No connection was ever handed out, so nothing was sent.
        return RetryLaterError("Timeout", f"no free connection ({detail})", sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return RetryLaterError("Timeout", f"request timed out ({detail})")
    if isinstance(exc, httpx.DecodingError):
        return RetryLaterError("MalformedReply", f"reply could not be decoded ({detail})")
    return RetryLaterError("NetworkError", f"request failed ({detail})")


def _scrub(text: str, secrets: Iterable[str]) -> str:
    # Whole values only, and none too short to tell from ordinary words (see aisd.logs).
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = whole_replaced(text, secret, _REDACTED)
    return text


def _redact_error(exc: KontomatikError, secrets: Iterable[str]) -> KontomatikError:
    """The same error with every secret removed from its message (upstream may echo them)."""
    secrets = tuple(secrets)
    message = _scrub(exc.message, secrets)
    if message == exc.message:
        return exc
    exc.message = message
    exc.args = (f"{exc.name}: {message}",)
    return exc


def _redact_command(command: Command, secrets: Iterable[str]) -> Command:
    failure = command.failure
    if failure is None:
        return command
    secrets = tuple(secrets)
    return dataclasses.replace(
        command,
        failure=dataclasses.replace(
            failure,
            message=_scrub(failure.message, secrets),
            friendly_message=None
            if failure.friendly_message is None
            else _scrub(failure.friendly_message, secrets),
        ),
    )
