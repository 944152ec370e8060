"""``daemon.status`` at a glance: the last successful import and the failures of the last hour."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from aisd.store import ConsentIn, ImportState
from tests import store_calls as sc
from tests.integration._harness import Env, run_until_done

pytestmark = pytest.mark.anyio


async def test_recent_activity_reports_the_last_success_and_recent_failures(env: Env) -> None:
    assert await sc.recent_activity(env.store, now=env.clock.now()) == (None, 0)
    good = await env.submit("ok-owner")
    now = env.clock.now()
    bad = await env.store.submit_consent(
        ConsentIn("ghost", "no-such-session", "sig"),
        now=now,
        since=date(2026, 1, 1),
        expires_at=now + timedelta(days=1),
    )
    await run_until_done(env, env.pipeline(), [good, bad.import_id])
    record = await sc.get_import(env.store, good)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
    last, failed = await sc.recent_activity(env.store, now=env.clock.now())
    assert last == record.finished_at
    assert failed == 1
    # An hour later the failure no longer counts; the last success is still shown.
    env.clock.advance(timedelta(hours=1, minutes=1))
    assert await sc.recent_activity(env.store, now=env.clock.now()) == (record.finished_at, 0)
    assert record.finished_at is not None
    assert record.finished_at.tzinfo == UTC or record.finished_at.utcoffset() == timedelta(0)
    assert datetime.now(UTC) >= record.finished_at - timedelta(seconds=1)
