"""The import pipeline against the in-process sandbox and a real SQLite store."""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from aisd.kontomatik import Session
from aisd.phases import Step
from aisd.store import (
    AccessKind,
    ConsentIn,
    ImportJob,
    ImportState,
    StepWrite,
    Succeed,
)
from tests import store_calls as sc
from tests.integration._harness import FAST, Env, run_until_done
from tests.integration.steps_helpers import claim, claim_of, stop

pytestmark = pytest.mark.anyio


async def test_initial_import_stores_what_the_sandbox_served(env: Env) -> None:
    import_id = await env.submit("owner-1")
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
    assert record.polls >= 1
    assert record.command_id
    [served] = env.sandbox.stats.served
    assert record.accounts == len(served.result.accounts)
    assert record.transactions == served.result.transaction_count
    for account in served.result.accounts:
        stored = await sc.transactions(env.store, "owner-1", account.iban)
        assert len(stored) == len(account.transactions) > 100
        got = sorted((t.transaction_on, t.amount, t.title, t.status) for t in stored)
        want = sorted((t.transaction_on, t.amount, t.title, t.status) for t in account.transactions)
        assert got == want
    assert env.sandbox.stats.imports_by_session == {served.session_id: 1}


async def test_running_commands_never_exceed_the_budget(env: Env) -> None:
    ids = [await env.submit(f"owner-{i}") for i in range(10)]
    await run_until_done(env, env.pipeline(replace(FAST, max_running=3)), ids)
    assert env.sandbox.stats.max_running <= 3
    assert env.sandbox.stats.commands_created == 10
    for i in ids:
        record = await sc.get_import(env.store, i)
        assert record is not None
        assert record.state == ImportState.SUCCESSFUL


async def test_polls_are_spaced_within_bounds(env: Env) -> None:
    config = replace(FAST, poll_min_seconds=0.1, poll_max_seconds=0.15)
    env.sandbox.config = replace(env.sandbox.config, command_seconds=1.0)
    times: list[float] = []
    original = env.client.get_import_result
    # Each poll's time as the pipeline read it just before the request (no await between):
    # a time read inside the request instead is late by however long the OS took the CPU
    # away in between, which on a loaded machine shortened a gap below the minimum.
    read = [0.0]
    monotonic = env.clock.monotonic

    def reading() -> float:
        read[0] = monotonic()
        return read[0]

    async def spy(command_id: str, **kwargs):  # type: ignore[no-untyped-def]
        times.append(read[0])
        return await original(command_id, **kwargs)

    env.clock.monotonic = reading  # type: ignore[method-assign]
    env.client.get_import_result = spy  # type: ignore[method-assign]
    import_id = await env.submit("owner-spacing")
    await run_until_done(env, env.pipeline(config), [import_id])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 5
    assert all(0.1 - 0.01 <= g <= 0.15 + 0.05 for g in gaps), gaps


async def recorded_default_import(env: Env, import_id: str) -> tuple[ImportJob, Session]:
    """Record the queued import's Default Import in the ledger, as the step before sending it
    does, and return the job and its session: what a process killed right then leaves behind."""
    job = await claim(env.store, import_id)
    assert job.import_id == import_id
    assert job.session is not None
    await sc.begin_access(
        env.store,
        claim_of(job),
        AccessKind.DEFAULT_IMPORT,
        now=datetime.now(UTC),
        token_id=job.token_id,
        session_id=job.session.session_id,
    )
    return job, job.session


async def test_a_command_that_was_running_is_polled_not_started_again(env: Env) -> None:
    import_id = await env.submit("owner-resume")
    job, session = await recorded_default_import(env, import_id)
    # What a killed process leaves: the access recorded, the command accepted upstream.
    command = await env.client.default_import(session, job.since)
    now = datetime.now(UTC)
    write = StepWrite(Step.COMMAND, command_id=command.id, not_before=now)
    await env.store.advance(claim_of(job), write, now=now)
    await stop(env.store, claim_of(job))
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
    assert record.command_id == command.id
    assert env.sandbox.stats.imports_by_session == {session.session_id: 1}


async def test_a_lost_default_import_reply_is_resolved_not_repeated_blindly(env: Env) -> None:
    import_id = await env.submit("owner-lost")
    job, session = await recorded_default_import(env, import_id)
    await env.client.default_import(session, job.since)  # its reply "lost" in a crash
    await stop(env.store, claim_of(job))
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "DefaultImportLost"
    # One retry, refused by the provider: never a second command on the session.
    assert env.sandbox.stats.imports_by_session[session.session_id] == 2
    assert env.sandbox.stats.commands_created == 1


async def test_a_default_import_that_never_left_is_simply_sent(env: Env) -> None:
    import_id = await env.submit("owner-unsent")
    job, _ = await recorded_default_import(env, import_id)
    await stop(env.store, claim_of(job))
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL


async def test_upstream_error_keeps_kontomatiks_exception(env: Env) -> None:
    env.sandbox.config = replace(env.sandbox.config, rate_import_error=1.0)
    import_id = await env.submit("owner-error")
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "ServiceTemporarilyUnavailable"


async def test_a_dead_session_fails_the_import_clearly(env: Env) -> None:
    now = datetime.now(UTC)
    outcome = await env.store.submit_consent(
        ConsentIn(owner_external_id="ghost", session_id="no-such-session", session_signature="x"),
        now=now,
        since=date(2026, 1, 1),
        expires_at=now + timedelta(days=1),
    )
    await run_until_done(env, env.pipeline(), [outcome.import_id])
    record = await sc.get_import(env.store, outcome.import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "InvalidSessionId"


async def test_transient_faults_are_retried_until_success(env: Env) -> None:
    # 5xx replies here are refused before processing: retrying loses nothing.
    env.sandbox.config = replace(env.sandbox.config, rate_5xx=0.5, seed=7)
    ids = [await env.submit(f"owner-flaky-{i}") for i in range(4)]
    await run_until_done(env, env.pipeline(), ids, limit=30)
    for i in ids:
        record = await sc.get_import(env.store, i)
        assert record is not None
        assert record.state == ImportState.SUCCESSFUL, record.error
    assert env.sandbox.stats.commands_created == 4


async def test_replies_cut_after_processing_never_start_a_second_command(env: Env) -> None:
    # A malformed reply to a Default Import comes after the command started upstream: the
    # import is reported lost, never repeated into a second command on the same session.
    env.sandbox.config = replace(env.sandbox.config, rate_malformed=0.3, seed=3)
    ids = [await env.submit(f"owner-cut-{i}") for i in range(6)]
    await run_until_done(env, env.pipeline(), ids, limit=30)
    outcomes = []
    for i in ids:
        record = await sc.get_import(env.store, i)
        assert record is not None
        assert record.state in (ImportState.SUCCESSFUL, ImportState.FAILED)
        if record.state == ImportState.FAILED:
            assert record.error is not None
            assert record.error.name == "DefaultImportLost"
        outcomes.append(record.state)
    assert ImportState.SUCCESSFUL in outcomes
    assert env.sandbox.stats.commands_created <= 6
    served_sessions = [s.session_id for s in env.sandbox.stats.served]
    assert len(served_sessions) == len(set(served_sessions))


def test_session_repr_hides_the_signature() -> None:
    assert "s3cret" not in repr(Session("sid", "s3cret"))


async def test_two_pipelines_sharing_a_store_keep_one_budget_and_never_both_drive_an_import(
    env: Env,
) -> None:
    config = replace(FAST, max_running=2)
    ids = [await env.submit(f"owner-pair-{n}") for n in range(6)]
    first, second = env.pipeline(config), env.pipeline(config)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await run_until_done(env, second, ids, limit=60)
        tg.cancel_scope.cancel()
    records = [await sc.get_import(env.store, i) for i in ids]
    assert all(r is not None and r.state == ImportState.SUCCESSFUL for r in records)
    stats = env.sandbox.stats
    assert stats.max_running <= 2
    assert stats.commands_created == len(ids)
    assert set(stats.imports_by_session.values()) == {1}


async def test_a_freed_slot_starts_the_next_import_before_the_result_is_stored(env: Env) -> None:
    # One slot, two imports: the second Default Import goes out once the first command is seen
    # ended, before its result is stored (and within the budget: never two running).
    config = replace(FAST, max_running=1)
    env.sandbox.config = replace(env.sandbox.config, command_seconds=0.2, max_running_commands=1)
    order: list[str] = []
    original_import = env.client.default_import
    original_store = env.store.advance

    async def default_import(*args, **kwargs):  # type: ignore[no-untyped-def]
        order.append("default_import")
        return await original_import(*args, **kwargs)

    async def advance(claim, write, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(write, Succeed):
            order.append("finish_success")
        return await original_store(claim, write, **kwargs)

    env.client.default_import = default_import  # type: ignore[method-assign]
    env.store.advance = advance  # type: ignore[method-assign]
    ids = [await env.submit(f"owner-handoff-{i}") for i in range(2)]
    await run_until_done(env, env.pipeline(config), ids)
    assert order == ["default_import", "default_import", "finish_success", "finish_success"]
    assert env.sandbox.stats.max_running == 1
    for i in ids:
        record = await sc.get_import(env.store, i)
        assert record is not None
        assert record.state == ImportState.SUCCESSFUL


async def test_a_dispatch_that_fails_is_logged_and_the_next_round_claims(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holding a write transaction past busy_timeout: SQLite's own error, not
    # a storage outage. It once ended the pipeline's task group, and the daemon with it.
    claim_work = env.store.claim_work
    failures = [sqlite3.OperationalError("database is locked")]

    async def locked_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await claim_work(*args, **kwargs)

    monkeypatch.setattr(env.store, "claim_work", locked_once)
    import_id = await env.submit("owner-locked")
    with capture_logs() as logs:
        await run_until_done(env, env.pipeline(), [import_id])
    assert failures == []
    assert [e["event"] for e in logs].count("pipeline.dispatch_failed") == 1
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
