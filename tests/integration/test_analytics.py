"""Optional analytics: scores fetched after a successful import, shown with the owner's data,
erased with the owner."""

from __future__ import annotations

import anyio
import pytest

from aisd.analytics import Analytics
from aisd.rpc import Params, Peer
from aisd.rpc.methods import Services, core_methods
from aisd.store import ImportState
from tests import store_calls as sc
from tests.integration._harness import Env, run_until_done

pytestmark = pytest.mark.anyio
PEER = Peer(pid=1, uid=0, gid=0, groups=frozenset())


def services(env: Env) -> Services:
    return Services(
        store=env.store,
        clock=env.clock,
        history_days=365,
        access_days=180,
        wake_pipeline=lambda: None,
        status_extra=dict,
        started_at="2026-11-29T00:00:00Z",
    )


async def test_scores_follow_a_successful_import_into_owner_data(env: Env) -> None:
    import_id = await env.submit("scored")
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
    [event] = [
        e
        for e in await sc.list_events(env.store, after=0, limit=50)
        if e.type == "import.succeeded"
    ]
    analytics = Analytics(env.store, env.client, env.clock, frozenset({"scores"}))
    async with anyio.create_task_group() as tg:
        await tg.start(analytics.run)
        analytics.observe(event)
        for _ in range(500):
            if await sc.owner_scores(env.store, "scored"):
                break
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    [score] = await sc.owner_scores(env.store, "scored")
    assert score.model_id == "common-2023-03-07"
    assert score.score is not None
    assert 0.0 <= score.score <= 1.0
    assert score.tier
    data = await core_methods(services(env))["owner.data"](
        Params({"ownerExternalId": "scored"}), PEER
    )
    assert isinstance(data, dict)
    assert data["analytics"]["scores"][0]["modelId"] == "common-2023-03-07"
    assert data["analytics"]["scores"][0]["tier"] == score.tier
    await env.store.forget_owner("scored", now=env.clock.now())
    assert await sc.owner_scores(env.store, "scored") == []


async def test_analytics_are_off_by_default_and_ignore_other_events(env: Env) -> None:
    import_id = await env.submit("unscored")
    await run_until_done(env, env.pipeline(), [import_id])
    events = await sc.list_events(env.store, after=0, limit=50)
    analytics = Analytics(env.store, env.client, env.clock, frozenset())
    for event in events:
        analytics.observe(event)
    on = Analytics(env.store, env.client, env.clock, frozenset({"scores"}))
    for event in events:
        if event.type != "import.succeeded":
            on.observe(event)
    async with anyio.create_task_group() as tg:
        await tg.start(analytics.run)
        await tg.start(on.run)
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert await sc.owner_scores(env.store, "unscored") == []
    data = await core_methods(services(env))["owner.data"](
        Params({"ownerExternalId": "unscored"}), PEER
    )
    assert isinstance(data, dict)
    assert "analytics" not in data
