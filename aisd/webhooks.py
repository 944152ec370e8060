"""Webhook delivery of the event feed, per the Standard Webhooks specification.

Each endpoint (``AISD_WEBHOOK_URL``) has a durable cursor in the database and its own task, which
POSTs the events after the cursor one at a time, in feed order, and moves the cursor only after a
2xx answer: delivery is at least once and survives restarts. A failed attempt (non-2xx, timeout,
refused connection, a redirect: never followed) is retried with exponential back-off and jitter,
and holds back that endpoint's later events, so the receiver never sees them out of order. The
tasks read the feed through the store's reader and write one small row per delivery: the
pipeline and the socket never wait for a receiver.

Every request carries ``webhook-id`` (the event id, the same on every retry: receivers drop
duplicates by it), ``webhook-timestamp`` and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256
of ``id.timestamp.body``), so any Standard Webhooks library verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from aisd import __version__
from aisd.clock import Clock, iso
from aisd.rpc.methods import event_json
from aisd.store import (
    EventRecord,
    StaleLeader,
    StorageUnavailable,
    Store,
    WebhookAdvance,
    WebhookCursor,
    WebhookFailed,
    WebhookRegister,
    WebhookRewind,
)

__all__ = [
    "RETRY_CAP_SECONDS",
    "TIMEOUT_SECONDS",
    "Webhooks",
    "endpoint_label",
    "retry_delay",
    "sign",
    "signature_header",
]

log = structlog.get_logger("aisd.webhooks")

RETRY_CAP_SECONDS = 600.0
TIMEOUT_SECONDS = 10.0
# Events read per pass; a pass also ends at the first failure.
BATCH = 100
# A follower re-reads the feed at least this often even when nothing woke it.
RECHECK_SECONDS = 2.0
# After an unexpected error (a bug, a database hiccup) a follower waits this long and goes on.
TROUBLE_PAUSE_SECONDS = 5.0
_MAX_ERROR_LEN = 300
_MAX_ANSWER_BYTES = 64 * 1024


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature of the ``webhook-signature`` header.

    Args:
        key: the secret's bytes (the base64 after ``whsec_``, decoded).
        msg_id: the ``webhook-id`` header.
        timestamp: the ``webhook-timestamp`` header (Unix seconds).
        body: the exact bytes sent.

    Returns:
        ``v1,`` followed by the base64 of HMAC-SHA256 over ``msg_id.timestamp.body``.
    """
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per key, space-separated, so a receiver
    holding either the old or the new secret verifies the delivery during a rotation."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def retry_delay(attempts: int, *, base: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row of one event.

    The ceiling doubles from ``base`` with each failure up to :data:`RETRY_CAP_SECONDS`; the
    delay is drawn from its upper half, so endpoints that failed together do not retry together
    and the wait never collapses to nothing.
    """
    exponent = min(max(attempts, 1) - 1, 32)
    ceiling = min(RETRY_CAP_SECONDS, base * 2.0**exponent)
    return rng.uniform(ceiling / 2, ceiling)


def endpoint_label(url: str) -> str:
    """The endpoint as shown in status, logs and metric labels: scheme, host, port and path,
    without credentials, query or fragment (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


def _unique_labels(urls: Sequence[str]) -> dict[str, str]:
    """Each URL's label; URLs that differ only in what a label drops get ``#2``, ``#3``..."""
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for url in urls:
        label = endpoint_label(url)
        seen[label] = seen.get(label, 0) + 1
        labels[url] = label if seen[label] == 1 else f"{label}#{seen[label]}"
    return labels


def encode_body(event: EventRecord) -> bytes:
    """The POST body: the event as ``events.list`` shows it, compact UTF-8 JSON."""
    return json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Attempt:
    ok: bool
    error: str | None = None


class Webhooks:
    """The delivery tasks of every configured endpoint, and their status.

    Args:
        store: where events and cursors live.
        clock: wall time for timestamps, and the retry schedule's waits.
        urls: the endpoints, as configured.
        keys: the HMAC keys (one per secret; more than one while a secret is rotated).
        types: event types to send; None sends every type.
        retry_seconds: the first retry's delay (doubled per failure, capped at 10 minutes).
        timeout: seconds one attempt may take, answer included.
        transport: an httpx transport (tests); the network by default.
        rng: jitter's randomness.
        leading: whether this daemon delivers now (daemons sharing a database: the leader
            alone, so an event is not sent by two of them; the cursor is shared).
        duty: the context each delivery pass runs in (the leader's term, which fences its
            writes: :meth:`aisd.cluster.Leadership.duty`).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        urls: Sequence[str],
        keys: Sequence[bytes],
        types: Collection[str] | None = None,
        retry_seconds: float = 1.0,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        leading: Callable[[], bool] = lambda: True,
        duty: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self._store = store
        self._leading = leading
        self._duty = duty
        self._clock = clock
        self._urls = tuple(urls)
        self._labels = _unique_labels(self._urls)
        if not keys:
            raise ValueError("webhooks need at least one signing key")
        self._keys = tuple(keys)
        self._types = None if types is None else frozenset(types)
        self._retry_seconds = retry_seconds
        self._timeout = timeout
        self._transport = transport
        self._rng = rng or random.Random()
        self._signal = anyio.Event()

    def wake(self) -> None:
        """New events may be in the feed, or a cursor moved: every follower looks again."""
        self._signal.set()
        self._signal = anyio.Event()

    def observe(self, event: EventRecord) -> None:
        """The event log's observer: a new event wakes the followers."""
        self.wake()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver to every endpoint until cancelled."""
        await self._store.webhook_write(WebhookRegister(tuple(self._urls)), now=self._clock.now())
        headers = {
            "User-Agent": f"aisd/{__version__}",
            "Content-Type": "application/json",
            # The answer is read only to reuse the connection: nothing to decompress.
            "Accept-Encoding": "identity",
        }
        async with (
            httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                transport=self._transport,
                headers=headers,
                trust_env=False,
            ) as http,
            anyio.create_task_group() as tg,
        ):
            for url in self._urls:
                tg.start_soon(self._follow, http, url, name=f"webhook {self._labels[url]}")
            task_status.started()

    async def _follow(self, http: httpx.AsyncClient, url: str) -> None:
        label = self._labels[url]
        while True:
            signal = self._signal
            try:
                wait = RECHECK_SECONDS
                if self._leading():
                    with self._duty():
                        wait = await self._pass(http, url, label)
            except (StorageUnavailable, StaleLeader):
                # StaleLeader: another daemon leads now and delivers from the shared cursor.
                wait = RECHECK_SECONDS
            except Exception:
                log.exception("webhook.follower_failed", endpoint=label)
                wait = TROUBLE_PAUSE_SECONDS
            if wait > 0:
                await self._rest(signal, wait)

    async def _rest(self, signal: anyio.Event, seconds: float) -> None:
        """Until ``signal`` is set or ``seconds`` have passed on the clock: the retry schedule
        is the clock's, so a virtual clock runs it without real waiting."""
        async with anyio.create_task_group() as tg:

            async def alarm() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(alarm)
            await signal.wait()
            tg.cancel_scope.cancel()

    async def _pass(self, http: httpx.AsyncClient, url: str, label: str) -> float:
        """Deliver what is due; returns how long to wait before the next pass."""
        (state,) = await self._store.webhook_cursors([url])
        now = self._clock.now()
        if state.next_attempt_at is not None and state.next_attempt_at > now:
            return (state.next_attempt_at - now).total_seconds()
        events = (await self._store.events(after=state.cursor, limit=BATCH)).events
        cursor = state.cursor
        for event in events:
            if self._types is not None and event.type not in self._types:
                continue
            if event.id - 1 > cursor:
                # Passed over by the filter: no POST, but the cursor moves past them.
                if not await self._advance(url, cursor, event.id - 1, None):
                    return 0.0
                cursor = event.id - 1
            attempt = await self._post(http, url, event)
            now = self._clock.now()
            if not attempt.ok:
                attempts = state.attempts + 1 if cursor == state.cursor else 1
                delay = retry_delay(attempts, base=self._retry_seconds, rng=self._rng)
                error = attempt.error or "failed"
                failed = WebhookFailed(
                    url,
                    cursor,
                    attempts,
                    next_attempt_at=now + timedelta(seconds=delay),
                    error=error,
                )
                await self._store.webhook_write(failed, now=now)
                log.warning(
                    "webhook.failed",
                    endpoint=label,
                    eventId=event.id,
                    attempts=attempts,
                    error=error,
                    retryInSeconds=round(delay, 2),
                )
                return delay
            if not await self._advance(url, cursor, event.id, now):
                return 0.0
            cursor = event.id
        if events and events[-1].id > cursor:
            await self._advance(url, cursor, events[-1].id, None)
            return 0.0
        return 0.0 if len(events) == BATCH else RECHECK_SECONDS

    async def _advance(self, url: str, expected: int, cursor: int, now: datetime | None) -> bool:
        write = WebhookAdvance(url, expected, cursor, delivered=now is not None)
        return await self._store.webhook_write(write, now=now or self._clock.now())

    async def _post(self, http: httpx.AsyncClient, url: str, event: EventRecord) -> _Attempt:
        body = encode_body(event)
        msg_id = str(event.id)
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(self._keys, msg_id, timestamp, body),
        }
        try:
            # One deadline for the whole exchange: httpx's timeout is per read, and a receiver
            # dribbling its answer byte by byte would otherwise hold the endpoint's queue.
            with anyio.move_on_after(self._timeout) as deadline:
                async with http.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
                    # The answer's body means nothing here: read a little so the connection
                    # can be reused, and never more.
                    read = 0
                    async for chunk in response.aiter_bytes():
                        read += len(chunk)
                        if read > _MAX_ANSWER_BYTES:
                            break
        except httpx.HTTPError as exc:
            # httpx's messages name the failure, never the URL (which may carry credentials).
            text = f"{type(exc).__name__}: {exc}".replace(url, self._labels[url])
            return _Attempt(False, text[:_MAX_ERROR_LEN])
        if deadline.cancelled_caught:
            return _Attempt(False, f"Timeout: no complete answer within {self._timeout:g} s")
        if 200 <= status < 300:
            return _Attempt(True)
        reason = f"HTTP {status}"
        if 300 <= status < 400:
            reason += " (redirects are not followed)"
        return _Attempt(False, reason)

    # -- the socket's view ---------------------------------------------------------------------

    def _matching(self, endpoint: str | None) -> list[str]:
        if endpoint is None:
            return list(self._urls)
        return [u for u in self._urls if endpoint in (u, self._labels[u])]

    async def status(self) -> list[dict[str, Any]]:
        """Each endpoint's cursor, lag, last success and last error (``webhooks.status``)."""
        now = self._clock.now()
        head = (await self._store.events(after=0, limit=0)).head
        cursors = await self._store.webhook_cursors(self._urls, backlog=True, types=self._types)
        out: list[dict[str, Any]] = []
        for state in cursors:
            assert state.backlog is not None
            backlog = (state.backlog.events, state.backlog.oldest_at)
            out.append(self._describe(state, head, now, backlog))
        return out

    def _describe(
        self,
        state: WebhookCursor,
        head: int,
        now: datetime,
        backlog: tuple[int, datetime | None],
    ) -> dict[str, Any]:
        pending, oldest = backlog
        lag_seconds = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        return {
            "endpoint": self._labels[state.url],
            "cursor": state.cursor,
            "head": head,
            "lagEvents": pending,
            "lagSeconds": round(lag_seconds, 3),
            "attempts": state.attempts,
            "nextAttemptAt": iso(state.next_attempt_at) if state.next_attempt_at else None,
            "lastSuccessAt": iso(state.last_success_at) if state.last_success_at else None,
            "lastError": None
            if state.last_error is None
            else {
                "message": state.last_error,
                "at": iso(state.last_error_at) if state.last_error_at else None,
            },
        }

    async def redeliver(self, from_id: int, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Deliver again every event from ``from_id`` on (``webhooks.redeliver``): the cursors
        move back to ``from_id - 1`` (never forward).

        Args:
            from_id: the first event id to deliver again.
            endpoint: one endpoint (its URL or its label); every endpoint when None.

        Returns:
            The status of the endpoints moved.

        Raises:
            LookupError: no configured endpoint matches ``endpoint``.
        """
        urls = self._matching(endpoint)
        if not urls:
            raise LookupError("no such webhook endpoint")
        rewind = WebhookRewind(tuple(urls), cursor=max(0, from_id - 1))
        await self._store.webhook_write(rewind, now=self._clock.now())
        log.info("webhook.redeliver", fromEventId=from_id, endpoints=len(urls))
        self.wake()
        return [s for s in await self.status() if s["endpoint"] in {self._labels[u] for u in urls}]

    async def lags(self) -> list[tuple[str, int, float]]:
        """``(endpoint label, events waiting, seconds the oldest has waited)`` per endpoint."""
        return [
            (s["endpoint"], int(s["lagEvents"]), float(s["lagSeconds"]))
            for s in await self.status()
        ]
