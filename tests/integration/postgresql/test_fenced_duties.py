"""The analytics and webhook duties of a leader deposed behind its back (frozen past its
lease while another daemon took over) keep nothing: their writes carry the stale term and
the shared store refuses them; the daemon that leads now does the work."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from aisd.analytics import Analytics
from aisd.clock import SystemClock
from aisd.cluster import Leadership
from aisd.settings import Settings
from aisd.store import EventRecord, LeaderTerm, StaleLeader, WebhookCursor, under_term
from aisd.store.postgresql import PostgresStore, open_postgres_store
from aisd.webhooks import Webhooks
from tests import store_calls as sc
from tests.integration._harness import Env, make_env, run_until_done

pytestmark = pytest.mark.anyio

URL = "http://hooks.test/in"
KEY = bytes(range(32))


class _StillClock(SystemClock):
    """Sleeps that never end: the leadership takes its lease once and never renews it, as a
    leader frozen after its last renewal."""

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep_forever()


@pytest.fixture
async def env(tmp_path: Path, postgres_url: str) -> AsyncIterator[Env]:
    settings = Settings(database_url=SecretStr(postgres_url))
    async for value in make_env(tmp_path, settings=settings):
        assert isinstance(value.store, PostgresStore)
        yield value


@pytest.fixture
async def other(postgres_url: str) -> AsyncIterator[PostgresStore]:
    """A second daemon's store on the same database."""
    store = await open_postgres_store(postgres_url)
    try:
        yield store
    finally:
        await store.close()


def _pg(env: Env) -> PostgresStore:
    assert isinstance(env.store, PostgresStore)
    return env.store


async def _depose(leadership: Leadership, env: Env, other: PostgresStore) -> LeaderTerm:
    """Pass the lease to ``other`` behind the leader's back; returns the new term. The
    leader's local deadline has not passed, so it still believes it leads."""
    stale = leadership.term
    assert stale is not None
    assert leadership.leading()
    await _pg(env).resign_leadership(leadership.holder)
    term = await other.take_leadership(other.origin, ttl_seconds=30)
    assert term == stale + 1
    assert leadership.leading()
    return LeaderTerm(other.origin, term)


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(1000):
        if done():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the condition did not come true in 20 s")


async def _until_async(done: Callable[[], Awaitable[object]]) -> None:
    for _ in range(1000):
        if await done():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the condition did not come true in 20 s")


async def _succeeded(env: Env, owner: str) -> EventRecord:
    import_id = await env.submit(owner)
    await run_until_done(env, env.pipeline(), [import_id])
    [event] = [
        e
        for e in await sc.list_events(env.store, after=0, limit=50)
        if e.type == "import.succeeded"
    ]
    return event


async def test_a_deposed_leaders_analytics_fetch_keeps_no_scores(
    env: Env, other: PostgresStore
) -> None:
    event = await _succeeded(env, "scored")
    leadership = Leadership(_pg(env), _StillClock())
    kinds = frozenset({"scores"})
    async with anyio.create_task_group() as tg:
        await tg.start(leadership.run)
        current = await _depose(leadership, env, other)
        stale = Analytics(env.store, env.client, env.clock, kinds, duty=leadership.duty)
        with capture_logs() as logs:
            await tg.start(stale.run)
            stale.observe(event)
            await _until(lambda: any(e["event"] == "analytics.fenced" for e in logs))
        tg.cancel_scope.cancel()
    assert not any(e["event"] == "analytics.stored" for e in logs)
    assert await sc.owner_scores(env.store, "scored") == []
    # The leader of the current term fetches and keeps them.
    leader = Analytics(other, env.client, env.clock, kinds, duty=lambda: under_term(current))
    async with anyio.create_task_group() as tg:
        await tg.start(leader.run)
        leader.observe(event)
        await _until_async(lambda: sc.owner_scores(other, "scored"))
        tg.cancel_scope.cancel()
    [score] = await sc.owner_scores(env.store, "scored")
    assert score.model_id == "common-2023-03-07"


async def test_a_deposed_leaders_delivery_leaves_the_shared_cursor_for_the_new_leader(
    env: Env, other: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SystemClock()
    # Registered first, so the import's events are all due to the endpoint.
    await sc.webhook_register(env.store, [URL], now=clock.now())
    event = await _succeeded(env, "hooked")
    received: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        return httpx.Response(204)

    transport = httpx.MockTransport(handle)
    refused = anyio.Event()
    read = env.store.webhook_cursors

    async def watched(*args: Any, **kwargs: Any) -> list[WebhookCursor]:
        try:
            return await read(*args, **kwargs)
        except StaleLeader:
            refused.set()
            raise

    monkeypatch.setattr(env.store, "webhook_cursors", watched)
    leadership = Leadership(_pg(env), _StillClock())
    async with anyio.create_task_group() as tg:
        await tg.start(leadership.run)
        current = await _depose(leadership, env, other)
        stale = Webhooks(
            env.store,
            clock,
            urls=[URL],
            keys=[KEY],
            transport=transport,
            leading=leadership.leading,
            duty=leadership.duty,
        )
        await tg.start(stale.run)
        with anyio.fail_after(20):
            await refused.wait()
        tg.cancel_scope.cancel()
    assert received == []
    [cursor] = await other.webhook_cursors([URL])
    assert cursor.cursor == 0
    assert cursor.attempts == 0
    leader = Webhooks(
        other, clock, urls=[URL], keys=[KEY], transport=transport, duty=lambda: under_term(current)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(leader.run)

        async def caught_up() -> bool:
            return (await other.webhook_cursors([URL]))[0].cursor >= event.id

        await _until_async(caught_up)
        tg.cancel_scope.cancel()
    assert len(received) == event.id
