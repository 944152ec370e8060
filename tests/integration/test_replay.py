"""``aisd replay`` rebuilds the merged data from kept raw replies, without any bank access."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aisd.replay import main as replay_main
from aisd.replay import replay
from aisd.settings import Settings, load_settings
from aisd.store import ConsentIn, open_store
from tests import store_calls as sc
from tests.integration._harness import Env, run_until_done

pytestmark = pytest.mark.anyio


def _settings(db: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AISD_DB_PATH", str(db))
    return load_settings(sandbox=True)


async def _snapshot(db: Path, owner: str) -> dict[str, list[tuple[Any, ...]]]:
    async with open_store(db) as store:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for account in await sc.accounts(store, owner):
            iban = str(account["iban"])
            out[iban] = [
                (t.id, t.transaction_on, t.booked_on, t.amount, t.title, t.status, t.labels)
                for t in await sc.transactions(store, owner, iban)
            ]
        return out


async def test_replay_rebuilds_the_same_merged_data(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await env.submit("owner-replay")
    await run_until_done(env, env.pipeline(), [first])
    # A second, overlapping import days later: pending rows booked, some vanished.
    env.clock.advance(timedelta(days=3))
    ibans = [a.iban for a in env.sandbox.stats.served[0].result.accounts]
    minted = env.sandbox.mint_consent("owner-replay", accounts=ibans)
    now = env.clock.now()
    second = await env.store.submit_consent(
        ConsentIn("owner-replay", minted.session_id, minted.signature),
        now=now,
        since=now.date() - timedelta(days=30),
        expires_at=now + timedelta(days=1),
    )
    await run_until_done(env, env.pipeline(), [second.import_id])
    before = await _snapshot(env.tmp / "aisd.db", "owner-replay")
    assert sum(len(v) for v in before.values()) > 100
    events_before = await sc.last_event_id(env.store)
    feed_before = await sc.feed_head(env.store)
    await env.store.close()

    replayed, failed = await replay(_settings(env.tmp / "aisd.db", monkeypatch))
    assert (replayed, failed) == (2, 0)
    # Same rows under the same ids: a replay of unchanged replies is no change at all.
    assert await _snapshot(env.tmp / "aisd.db", "owner-replay") == before
    async with open_store(env.tmp / "aisd.db") as store:
        assert await sc.last_event_id(store) == events_before  # the event feed is left alone
        assert await sc.feed_head(store) == feed_before  # and the change feed saw nothing
    assert len(env.sandbox.stats.served) == 2  # no bank access


def test_replay_refuses_to_run_beside_a_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aisd.instance import instance_lock

    settings = _settings(tmp_path / "aisd.db", monkeypatch)
    with instance_lock(settings.db_path):
        assert replay_main(settings) == 1
    assert "stop the daemon first" in capsys.readouterr().err
