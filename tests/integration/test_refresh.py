"""Multiple access end to end in-process: planner tick, quota gate, upstream answers, expiry,
revocation and cost limits, against the sandbox (which enforces the provider's rules)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from aisd.planner import Rules
from aisd.refresh import Refresher, RefreshRefused
from aisd.store import ImportKind, ImportState, TokenRecord, TokenState
from tests import store_calls as sc
from tests.integration._harness import Env, run_until_done

pytestmark = pytest.mark.anyio


def refresher(env: Env, *, per_day: int = 4, warnings: Sequence[int] = (14, 7, 3, 1)) -> Refresher:
    return Refresher(
        env.store,
        env.client,
        env.clock,
        rules=Rules(refreshes_per_day=per_day),
        overlap_days=3,
        warning_days=warnings,
        wake_pipeline=lambda: None,
    )


async def consented(env: Env, owner: str, **kwargs: object) -> TokenRecord:
    """A consent with multiple access whose first import has finished."""
    import_id = await env.submit(owner, multiple=True, **kwargs)  # type: ignore[arg-type]
    await run_until_done(env, env.pipeline(), [import_id])
    [token] = await env.store.list_tokens(owner_external_id=owner)
    return token


async def event_types(env: Env) -> list[str]:
    return [e.type for e in await sc.list_events(env.store, after=0, limit=1000)]


async def test_a_due_token_is_refreshed_through_reuse(env: Env) -> None:
    r = refresher(env)
    token = await consented(env, "alice")
    assert len(token.accounts) == 2
    first = await r.tick()
    assert first.queued == 0  # planned, not due yet
    [token] = await env.store.list_tokens(token_ids=[token.token_id])
    assert token.next_refresh_at is not None
    env.clock.advance(token.next_refresh_at - env.clock.now() + timedelta(seconds=1))
    report = await r.tick()
    assert report.queued == 1
    [queued] = await sc.list_imports(env.store, token_id=token.token_id, kind=ImportKind.REFRESH)
    await run_until_done(env, env.pipeline(gate=r), [queued.import_id])
    done = await sc.get_import(env.store, queued.import_id)
    assert done is not None
    assert done.state == ImportState.SUCCESSFUL
    # The reuse session returns at most 90 days, and since covers the overlap only.
    assert done.since >= (env.clock.now() - timedelta(days=90)).date()
    for iban in token.accounts:
        assert len(env.sandbox.stats.reuses_by_account[iban]) == 1
    [after] = await env.store.list_tokens(token_ids=[token.token_id])
    assert after.imports_done == 2
    assert after.failures == 0


async def test_on_demand_refresh_honours_the_rolling_quota(env: Env) -> None:
    r = refresher(env, per_day=2)
    token = await consented(env, "bob")
    for _ in range(2):
        import_id = await r.refresh_now(token.token_id)
        await run_until_done(env, env.pipeline(gate=r), [import_id])
    with pytest.raises(RefreshRefused) as refused:
        await r.refresh_now(token.token_id)
    assert refused.value.reason == "quota"
    assert refused.value.next_possible_at is not None
    # The window frees 24 h (plus the planner's guard) after the first reuse.
    first_reuse = min(min(times) for times in env.sandbox.stats.reuses_by_account.values())
    assert refused.value.next_possible_at >= first_reuse + timedelta(hours=24)
    assert refused.value.next_possible_at <= first_reuse + timedelta(hours=24, minutes=5)
    env.clock.advance(refused.value.next_possible_at - env.clock.now() + timedelta(seconds=1))
    assert await r.refresh_now(token.token_id)


async def test_a_dead_token_asks_for_reauthorization_and_stops(env: Env) -> None:
    r = refresher(env)
    token = await consented(env, "carol")
    [minted_secret] = [t for t in [await env.store.multiple_access_id(token.token_id)] if t]
    env.sandbox.kill_token(minted_secret)
    import_id = await r.refresh_now(token.token_id)
    await run_until_done(env, env.pipeline(gate=r), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.error is not None
    assert record.error.name == "InvalidMultipleAccessId"
    [after] = await env.store.list_tokens(token_ids=[token.token_id])
    assert after.state == TokenState.REAUTH_REQUIRED
    assert "token.reauth_required" in await event_types(env)
    assert await env.store.multiple_access_id(token.token_id) is None
    env.clock.advance(timedelta(days=2))
    assert (await r.tick()).queued == 0
    with pytest.raises(RefreshRefused):
        await r.refresh_now(token.token_id)


async def test_another_company_using_the_quota_defers_without_a_storm(env: Env) -> None:
    r = refresher(env)
    token = await consented(env, "dave")
    secret = await env.store.multiple_access_id(token.token_id)
    assert secret is not None
    for _ in range(4):  # someone else spends the account's four daily accesses
        env.sandbox.reuse(secret)
    import_id = await r.refresh_now(token.token_id)
    await run_until_done(env, env.pipeline(gate=r), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.error is not None
    assert record.error.name == "MultipleAccessLimitExceeded"
    [after] = await env.store.list_tokens(token_ids=[token.token_id])
    assert after.upstream_deferred_until is not None
    assert after.upstream_deferred_until >= env.clock.now() + timedelta(hours=5)
    [deferred] = [
        e for e in await sc.list_events(env.store, after=0, limit=100) if e.type == "quota.deferred"
    ]
    assert deferred.data["reason"] == "upstream_limit"
    report = await r.tick()
    assert report.queued == 0
    [planned] = await env.store.list_tokens(token_ids=[token.token_id])
    assert planned.next_refresh_at is not None
    assert planned.next_refresh_at >= after.upstream_deferred_until
    # Ticking again does not repeat the event or the access.
    await r.tick()
    assert (await event_types(env)).count("quota.deferred") == 1
    assert sum(len(v) for v in env.sandbox.stats.reuses_by_account.values()) == 2 * 5


async def test_tokens_sharing_an_account_share_its_quota(env: Env) -> None:
    r = refresher(env, per_day=1)
    first = await consented(env, "erin")
    shared = sorted(first.accounts)
    second = await consented(env, "erin-joint", accounts=shared[:1])
    # Both queued before either is sent: the gate lets exactly one Reuse through.
    a = await r.refresh_now(first.token_id)
    b = await r.refresh_now(second.token_id)
    await run_until_done(env, env.pipeline(gate=r), [a])
    deferred = await sc.get_import(env.store, b)
    assert deferred is not None
    assert deferred.state == ImportState.QUEUED
    assert len(env.sandbox.stats.reuses_by_account[shared[0]]) == 1
    with pytest.raises(RefreshRefused) as refused:
        await r.refresh_now(first.token_id)
    assert refused.value.reason == "quota"


async def test_expiry_warns_once_per_threshold_then_expires(env: Env) -> None:
    r = refresher(env, warnings=(3, 1))
    token = await consented(env, "fay", expires_in=timedelta(days=5))
    await r.tick()
    assert "token.expiring" not in await event_types(env)
    env.clock.advance(timedelta(days=2, hours=1))
    await r.tick()
    await r.tick()
    assert (await event_types(env)).count("token.expiring") == 1
    env.clock.advance(timedelta(days=2))
    await r.tick()
    assert (await event_types(env)).count("token.expiring") == 2
    env.clock.advance(timedelta(days=1))
    report = await r.tick()
    assert report.expired == 1
    [after] = await env.store.list_tokens(token_ids=[token.token_id])
    assert after.state == TokenState.EXPIRED
    assert (await event_types(env)).count("token.expired") == 1


async def test_revoke_calls_upstream_once_and_is_idempotent(env: Env) -> None:
    r = refresher(env)
    token = await consented(env, "gus")
    secret = await env.store.multiple_access_id(token.token_id)
    assert secret is not None
    assert await r.revoke(token.token_id, reason="revoked on request") == TokenState.REVOKED
    assert await r.revoke(token.token_id, reason="again") == TokenState.REVOKED
    assert (await event_types(env)).count("token.revoked") == 1
    with pytest.raises(Exception, match="InvalidMultipleAccessId"):
        env.sandbox.reuse(secret)  # dead upstream too


async def test_a_consents_import_limit_revokes_the_token_itself(env: Env) -> None:
    r = refresher(env)
    token = await consented(env, "hal", max_imports=1)
    report = await r.tick()
    assert report.ending == ((token.token_id, "maxImports reached"),)
    assert await r.end_by_limit(report.ending) == 1
    [after] = await env.store.list_tokens(token_ids=[token.token_id])
    assert after.state == TokenState.REVOKED
    revoked = [
        e for e in await sc.list_events(env.store, after=0, limit=100) if e.type == "token.revoked"
    ]
    assert revoked[0].data["reason"] == "maxImports reached"


async def test_a_failed_first_import_brings_the_first_refresh_forward(env: Env) -> None:
    r = refresher(env)
    env.sandbox.config = replace(env.sandbox.config, rate_import_error=1.0)
    import_id = await env.submit("ivy", multiple=True)
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    [token] = await env.store.list_tokens(owner_external_id="ivy")
    assert token.failures == 1
    await r.tick()
    [planned] = await env.store.list_tokens(token_ids=[token.token_id])
    assert planned.plan_reason == "backoff"
    assert planned.next_refresh_at is not None
    # Minutes after the consent, not a quarter of a day: the integrator has no data yet.
    assert planned.next_refresh_at <= token.created_at + timedelta(minutes=10)
    env.sandbox.config = replace(env.sandbox.config, rate_import_error=0.0)
    env.clock.advance(planned.next_refresh_at - env.clock.now() + timedelta(seconds=1))
    assert (await r.tick()).queued == 1
    [refresh] = await sc.list_imports(env.store, token_id=token.token_id, kind=ImportKind.REFRESH)
    await run_until_done(env, env.pipeline(gate=r), [refresh.import_id])
    done = await sc.get_import(env.store, refresh.import_id)
    assert done is not None
    assert done.state == ImportState.SUCCESSFUL
