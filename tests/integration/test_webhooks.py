"""Webhook delivery against a real store and a receiver behind httpx's mock transport."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from aisd._simulation_world import watched
from aisd.clock import SystemClock, VirtualClock
from aisd.rpc import INVALID_PARAMS, NOT_FOUND, Params, Peer, RpcError
from aisd.rpc.catalog import CATALOG
from aisd.rpc.methods_ops import webhook_methods
from aisd.store import (
    NewEvent,
    SqliteStore,
    WebhookAdvance,
    WebhookFailed,
    WebhookWrite,
    open_store,
)
from aisd.webhooks import Webhooks, endpoint_label
from tests import store_calls as sc

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
URL = "http://user:pw@hooks.test/in?token=abc"
OTHER = "http://other.test/"
VERIFIER = Webhook(KEY)


class WatchedStore(SqliteStore):
    """The real store, announcing each cursor write so tests wait on it instead of polling."""

    written = anyio.Event()

    def _announce(self) -> None:
        self.written.set()
        self.written = anyio.Event()

    async def webhook_write(self, write: WebhookWrite, *, now: datetime) -> bool:
        done = await super().webhook_write(write, now=now)
        if isinstance(write, WebhookAdvance | WebhookFailed):
            self._announce()
        return done


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WatchedStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield WatchedStore(opened._writer, opened._reader, opened.path, opened._checkpointer)


class Receiver:
    """Records verified deliveries; ``answer`` decides the status of each request."""

    def __init__(self) -> None:
        self.received: dict[str, list[int]] = {}
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], int] = lambda request: 200
        self.changed = anyio.Event()

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.answer(request)
        if 200 <= status < 300:
            payload = VERIFIER.verify(request.content, dict(request.headers))
            assert request.headers["webhook-id"] == str(payload["id"])
            self.received.setdefault(str(request.url.host), []).append(payload["id"])
        self.changed.set()
        self.changed = anyio.Event()
        return httpx.Response(status, headers={"Location": "http://elsewhere.test/"})

    async def wait_for(self, host: str, count: int) -> list[int]:
        with anyio.fail_after(10):
            while len(self.received.get(host, [])) < count:
                await self.changed.wait()
        return self.received[host]


async def append(store: SqliteStore, *types: str) -> list[int]:
    events = [NewEvent(t, "owner-1", None, None, {"n": i}) for i, t in enumerate(types)]
    return await sc.append_events(store, events, now=datetime.now(UTC))


async def wait_cursor(store: WatchedStore, url: str, cursor: int) -> None:
    with anyio.fail_after(10):
        while True:
            written = store.written
            if (await store.webhook_cursors([url]))[0].cursor == cursor:
                return
            await written.wait()


def make(store: SqliteStore, receiver: Receiver, **kwargs: object) -> Webhooks:
    return Webhooks(
        store,
        SystemClock(),
        urls=kwargs.pop("urls", (URL,)),  # type: ignore[arg-type]
        keys=[KEY],
        retry_seconds=0.01,
        transport=httpx.MockTransport(receiver.handle),
        rng=random.Random(0),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_new_endpoint_starts_at_the_end_and_gets_every_later_event_in_order(
    store: WatchedStore,
) -> None:
    await append(store, "consent.received")  # before the endpoint existed: not sent
    receiver = Receiver()
    hooks = make(store, receiver)
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        ids = await append(store, *["import.succeeded"] * 5)
        hooks.wake()
        assert await receiver.wait_for("hooks.test", 5) == ids
        await wait_cursor(store, URL, ids[-1])
        (status,) = await hooks.status()
        tg.cancel_scope.cancel()
    assert status["endpoint"] == "http://hooks.test/in"
    assert (status["cursor"], status["head"], status["lagEvents"]) == (ids[-1], ids[-1], 0)
    assert status["lastSuccessAt"] is not None
    assert status["lastError"] is None
    body = json.loads(receiver.requests[0].content)
    assert set(body) == {"id", "at", "type", "ownerExternalId", "tokenId", "importId", "data"}


async def test_failures_hold_back_later_events_and_nothing_is_dropped(store: WatchedStore) -> None:
    receiver = Receiver()
    failures = {"left": 6}

    def flaky(request: httpx.Request) -> int:
        if failures["left"] > 0:
            failures["left"] -= 1
            return 500 if failures["left"] % 2 else 302
        return 204

    receiver.answer = flaky
    hooks = make(store, receiver)
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        ids = await append(store, "a.one", "a.two", "a.three")
        hooks.wake()
        assert await receiver.wait_for("hooks.test", 3) == ids
        await wait_cursor(store, URL, ids[-1])
        tg.cancel_scope.cancel()
    # Only the first event was ever tried while failing: the later ones waited their turn.
    first_seven = [int(r.headers["webhook-id"]) for r in receiver.requests[:7]]
    assert first_seven == [ids[0]] * 7
    # Redirects are not followed: the Location was never asked.
    assert {r.url.host for r in receiver.requests} == {"hooks.test"}
    (state,) = await store.webhook_cursors([URL])
    assert state.attempts == 0
    assert state.last_error is not None
    assert "HTTP" in state.last_error


async def test_status_shows_lag_and_the_last_error_while_failing(store: WatchedStore) -> None:
    receiver = Receiver()
    receiver.answer = lambda request: 503
    hooks = Webhooks(
        store,
        SystemClock(),
        urls=(URL,),
        keys=[KEY],
        retry_seconds=60,
        transport=httpx.MockTransport(receiver.handle),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        await append(store, "a.one", "a.two")
        hooks.wake()
        with anyio.fail_after(10):
            while True:
                written = store.written
                if (await hooks.status())[0]["lastError"]:
                    break
                await written.wait()
        (status,) = await hooks.status()
        tg.cancel_scope.cancel()
    assert (status["lagEvents"], status["attempts"]) == (2, 1)
    assert status["lastError"]["message"] == "HTTP 503"
    assert status["nextAttemptAt"] is not None
    shown = json.dumps(status)
    assert "pw" not in shown
    assert "token=abc" not in shown


async def test_type_filter_passes_events_over_and_moves_the_cursor(store: WatchedStore) -> None:
    receiver = Receiver()
    hooks = make(store, receiver, types={"import.failed"})
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        ids = await append(store, "import.started", "import.failed", "import.started")
        hooks.wake()
        assert await receiver.wait_for("hooks.test", 1) == [ids[1]]
        await wait_cursor(store, URL, ids[2])
        (status,) = await hooks.status()
        tg.cancel_scope.cancel()
    assert status["lagEvents"] == 0


async def test_restart_resumes_after_the_cursor_and_redeliver_moves_it_back(
    store: WatchedStore,
) -> None:
    receiver = Receiver()
    async with anyio.create_task_group() as tg:
        await tg.start(make(store, receiver).run)
        ids = await append(store, "a.one", "a.two", "a.three")
        await receiver.wait_for("hooks.test", 3)
        await wait_cursor(store, URL, ids[-1])
        tg.cancel_scope.cancel()
    more = await append(store, "a.four")
    hooks = make(store, receiver, urls=(URL, OTHER))
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        assert await receiver.wait_for("hooks.test", 4) == [*ids, *more]
        await wait_cursor(store, URL, more[-1])
        moved = await hooks.redeliver(ids[1], "http://hooks.test/in")
        assert [m["cursor"] for m in moved] == [ids[0]]
        assert await receiver.wait_for("hooks.test", 7) == [*ids, *more, *ids[1:], *more]
        with pytest.raises(LookupError):
            await hooks.redeliver(1, "http://unknown.test/")
        tg.cancel_scope.cancel()
    # The endpoint added later started at the feed's end then: it got nothing old.
    assert "other.test" not in receiver.received
    assert endpoint_label(OTHER) == "http://other.test/"


async def test_endpoints_told_apart_only_by_a_query_get_distinct_labels(
    store: WatchedStore,
) -> None:
    first, second = "https://h.test/in?tenant=1", "https://h.test/in?tenant=2"
    hooks = Webhooks(store, SystemClock(), urls=(first, second), keys=[KEY])
    await sc.webhook_register(store, [first, second], now=datetime.now(UTC))
    labels = [s["endpoint"] for s in await hooks.status()]
    assert labels == ["https://h.test/in", "https://h.test/in#2"]
    moved = await hooks.redeliver(1, "https://h.test/in#2")
    assert [m["endpoint"] for m in moved] == ["https://h.test/in#2"]


async def test_socket_methods_validate_their_params(store: WatchedStore) -> None:
    peer = Peer(pid=1, uid=0, gid=0, groups=frozenset())

    def bound(method: str, raw: dict[str, object] | list[object]) -> Params:
        # What the server does with a request's params before the handler sees them.
        return CATALOG[method].signature.bind(raw)

    unconfigured = webhook_methods(None)
    status = await unconfigured["webhooks.status"](bound("webhooks.status", []), peer)
    assert status == {"endpoints": []}
    with pytest.raises(RpcError) as info:
        await unconfigured["webhooks.redeliver"](bound("webhooks.redeliver", {"from": 1}), peer)
    assert info.value.code == NOT_FOUND
    methods = webhook_methods(make(store, Receiver()))
    refused: list[dict[str, object]] = [
        {},
        {"from": 0},
        {"from": "1"},
        {"from": 1, "url": "x"},
        {"from": True},
    ]
    for bad in refused:
        with pytest.raises(RpcError) as info:
            await methods["webhooks.redeliver"](bound("webhooks.redeliver", bad), peer)
        assert info.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as info:
        await methods["webhooks.redeliver"](
            bound("webhooks.redeliver", {"from": 1, "endpoint": "http://no.test/"}), peer
        )
    assert info.value.code == NOT_FOUND
    await sc.webhook_register(store, [URL], now=datetime.now(UTC))
    moved = await methods["webhooks.redeliver"](
        bound("webhooks.redeliver", {"from": 1, "endpoint": "http://hooks.test/in"}), peer
    )
    status = await methods["webhooks.status"](bound("webhooks.status", {}), peer)
    assert moved == status
    assert isinstance(status, dict)
    assert status["endpoints"][0]["cursor"] == 0


class _Dribble(httpx.AsyncByteStream):
    """An answer that arrives a byte at a time, too slowly."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(100):
            await anyio.sleep(0.05)
            yield b"."


async def test_an_answer_that_never_completes_is_a_timeout(store: WatchedStore) -> None:
    receiver = Receiver()
    slow = {"left": 1}

    async def handle(request: httpx.Request) -> httpx.Response:
        if slow["left"]:
            slow["left"] -= 1
            return httpx.Response(200, stream=_Dribble())
        return receiver.handle(request)

    hooks = Webhooks(
        store,
        SystemClock(),
        urls=(URL,),
        keys=[KEY],
        retry_seconds=0.01,
        timeout=0.3,
        transport=httpx.MockTransport(handle),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        ids = await append(store, "a.one")
        hooks.wake()
        assert await receiver.wait_for("hooks.test", 1) == ids
        await wait_cursor(store, URL, ids[0])
        tg.cancel_scope.cancel()
    (state,) = await store.webhook_cursors([URL])
    assert state.last_error == "Timeout: no complete answer within 0.3 s"


@hsettings(max_examples=15, deadline=None)
# Twenty-five failures in a row on one event: hours of back-off, past the cap.
@example(answers=["500"] * 25, types=["a.x", "b.y"], only=None)
@given(
    answers=st.lists(st.sampled_from(["ok", "500", "302", "refused"]), max_size=25),
    types=st.lists(st.sampled_from(["a.x", "b.y", "c.z"]), min_size=1, max_size=12),
    only=st.one_of(st.none(), st.sampled_from([{"a.x"}, {"a.x", "c.z"}])),
)
def test_any_sequence_of_failures_delivers_the_filtered_feed_in_order_exactly(
    answers: list[str], types: list[str], only: set[str] | None
) -> None:
    """Without a crash, whatever the receiver answers, the 2xx deliveries are exactly the
    wanted events in feed order, and every attempt is at the oldest one not delivered yet.

    The back-off runs on a virtual clock: a long run of failures waits out the whole real
    schedule (minutes, up to the cap) without a real second passing.
    """
    script = list(answers)
    attempts: list[tuple[int, bool]] = []
    clock = VirtualClock(datetime.now(UTC))

    def handle(request: httpx.Request) -> httpx.Response:
        event_id = int(request.headers["webhook-id"])
        answer = script.pop(0) if script else "ok"
        attempts.append((event_id, answer == "ok"))
        if answer == "refused":
            raise httpx.ConnectError("Connection refused")
        if answer != "ok":
            return httpx.Response(int(answer))
        # Signed now, on the daemon's clock; the library's own signing checks the signature
        # (its verify() would compare the timestamp with the real clock, hours behind).
        sent_at = int(request.headers["webhook-timestamp"])
        assert sent_at == int(clock.now().timestamp())
        expected = VERIFIER.sign(
            str(event_id), datetime.fromtimestamp(sent_at, UTC), request.content.decode()
        )
        assert expected in request.headers["webhook-signature"].split(" ")
        assert json.loads(request.content)["id"] == event_id
        return httpx.Response(200)

    async def scenario(directory: str) -> list[int]:
        async with open_store(Path(directory) / "aisd.db") as opened:
            store = WatchedStore(opened._writer, opened._reader, opened.path, opened._checkpointer)
            hooks = Webhooks(
                watched(store, clock),
                clock,
                urls=(URL,),
                keys=[KEY],
                types=only,
                transport=httpx.MockTransport(handle),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(clock.run)
                await tg.start(hooks.run)
                ids = await append(store, *types)
                hooks.wake()
                await wait_cursor(store, URL, ids[-1])
                tg.cancel_scope.cancel()
            return [i for i, t in zip(ids, types, strict=True) if only is None or t in only]

    with tempfile.TemporaryDirectory() as directory:
        wanted = anyio.run(scenario, directory)
    assert [event_id for event_id, ok in attempts if ok] == wanted
    pending = list(wanted)
    for event_id, ok in attempts:
        assert event_id == pending[0], "a later event went before an undelivered one"
        if ok:
            pending.pop(0)
    assert pending == []


async def test_a_daemon_delivers_only_while_it_leads(store: WatchedStore) -> None:
    receiver = Receiver()
    leads = False
    asked = anyio.Event()

    def leading() -> bool:
        asked.set()
        return leads

    hooks = make(store, receiver, leading=leading)
    async with anyio.create_task_group() as tg:
        await tg.start(hooks.run)
        ids = await append(store, *["import.succeeded"] * 3)
        for _ in range(2):  # two passes after the events were appended
            asked = anyio.Event()
            hooks.wake()
            with anyio.fail_after(10):
                await asked.wait()
        # Another daemon on the same database leads: this one sent nothing.
        assert receiver.requests == []
        leads = True
        hooks.wake()
        assert await receiver.wait_for("hooks.test", 3) == ids
        await wait_cursor(store, URL, ids[-1])
        tg.cancel_scope.cancel()
    assert [json.loads(r.content)["id"] for r in receiver.requests] == ids
