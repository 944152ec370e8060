"""The one wiring: what :func:`aisd.wiring.open_core` builds is connected as the daemon needs."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from aisd.rpc import Params, Peer
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxConfig
from aisd.settings import Settings
from aisd.store import ImportState, Store
from aisd.wiring import Hooks, embedded_sandbox, open_core
from tests import store_calls as sc
from tests.integration._harness import FAST, ManualClock

pytestmark = pytest.mark.anyio
PEER = Peer(pid=1, uid=0, gid=0, groups=frozenset())
SUBMITTED = ("ownerExternalId", "sessionId", "sessionIdSignature", "multipleAccessId")


async def test_a_consent_through_the_methods_runs_its_import_and_calls_every_hook(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    box = Sandbox(SandboxConfig(command_seconds=0.3), clock=clock.now)
    calls: list[str] = []
    hooks = Hooks()
    async with open_core(
        Settings(),
        clock=clock,
        sandbox=box,
        db_path=tmp_path / "aisd.db",
        hooks=hooks,
        pipeline_config=FAST,
    ) as core:
        # Hooks set after wiring count: the daemon builds its event log on the opened store.
        hooks.on_consent = lambda: calls.append("consent")
        hooks.on_change = lambda: calls.append("change")
        hooks.on_queued = lambda: calls.append("queued")
        table = core.handlers()
        assert {"consent.submit", "owner.forget", "token.revoke", "sandbox.mint"} <= set(table)
        minted = await table["sandbox.mint"](Params({"ownerExternalId": "ann"}), PEER)
        assert isinstance(minted, dict)
        submitted = await table["consent.submit"](
            Params({key: minted[key] for key in SUBMITTED}), PEER
        )
        assert isinstance(submitted, dict)
        assert calls == ["consent"]
        async with anyio.create_task_group() as tg:
            await tg.start(core.pipeline.run)
            with anyio.fail_after(20):
                while True:
                    record = await sc.get_import(core.store, submitted["importId"])
                    assert record is not None
                    if record.state == ImportState.SUCCESSFUL:
                        break
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert "change" in calls
        # An on-demand refresh queues through the refresher, whose wake reaches the hook.
        refreshed = await table["token.refresh"](Params({"tokenId": submitted["tokenId"]}), PEER)
        assert isinstance(refreshed, dict)
        assert refreshed["importId"]
        assert calls[-1] == "queued"
        status = await table["daemon.status"](Params({}), PEER)
        assert isinstance(status, dict)
        assert status["sandbox"] is True
        assert status["slotLimit"] == FAST.max_running


async def test_the_store_wrapper_is_what_every_part_uses(tmp_path: Path) -> None:
    seen: list[Store] = []

    def wrap(store: Store) -> Store:
        seen.append(store)
        return store

    settings = Settings()
    path = tmp_path / "a.db"
    async with open_core(
        settings, clock=ManualClock(), sandbox=Sandbox(), db_path=path, wrap_store=wrap
    ) as core:
        assert seen == [core.store]
        assert core.services.store is core.store


def test_the_embedded_sandbox_takes_the_key_and_the_token_validity_from_the_settings() -> None:
    box = embedded_sandbox(Settings(access_days=90))
    assert box.config.api_key == DEFAULT_API_KEY
    assert box.config.token_days == 90
    keyed = embedded_sandbox(Settings(api_key=SecretStr("k" * 32)))
    assert keyed.config.api_key == "k" * 32
