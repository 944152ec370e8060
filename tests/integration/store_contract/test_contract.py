"""What every store backend guarantees, whatever its concurrency: claims and fencing, the slot
budget, the quota section under races, uniqueness, and feed ordering."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from aisd import events
from aisd.kontomatik._models import CommandFailure, Session
from aisd.phases import Step
from aisd.planner import Rules
from aisd.refresh import Refresher, TickRule
from aisd.store import (
    AccessKind,
    AccessStart,
    Claim,
    ConflictError,
    ConsentIn,
    ImportJob,
    ImportKind,
    ImportState,
    LeaseLost,
    NotFoundError,
    QuotaAnswer,
    SqliteStore,
    StepAfter,
    StepWrite,
    SubmitOutcome,
    TokenEnd,
    TokenState,
    TokenWarned,
    WarningRescheduled,
)
from tests import store_calls as sc
from tests.integration.data_helpers import consent_import, result
from tests.integration.steps_helpers import claim_of, to_polling

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


async def _consent(store: SqliteStore, n: int, *, token: bool = False) -> str:
    out = await store.submit_consent(
        ConsentIn(
            owner_external_id=f"owner-{n}",
            session_id=f"session-{n}",
            session_signature=f"sig-{n}",
            multiple_access_id=f"maid-{n}" if token else None,
        ),
        now=T0,
        since=T0.date() - timedelta(days=30),
        expires_at=T0 + timedelta(days=180),
    )
    return out.import_id


def _refresher(store: SqliteStore) -> Refresher:
    """The refresher's pure rules (4 refreshes a day), with no client or clock: the store's
    sections only ask it to decide."""
    return Refresher(
        store,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        rules=Rules(refreshes_per_day=4),
        overlap_days=1,
        warning_days=(),
        wake_pipeline=lambda: None,
    )


async def _claimer(store: SqliteStore, *, sole: bool = False, max_running: int = 3) -> str:
    return await sc.register_claimer(
        store, now=T0, ttl_seconds=30, sole=sole, max_running=max_running
    )


async def test_claims_take_slots_up_to_the_budget_and_never_twice(backend: SqliteStore) -> None:
    ids = [await _consent(backend, n) for n in range(5)]
    a, b = await _claimer(backend), await _claimer(backend)
    first = await backend.claim_work(a, now=T0)
    assert {j.import_id for j in first} <= set(ids)
    assert len(first) == 3
    assert all(j.claim is not None and j.claim.claimer == a for j in first)
    # The budget is full and a's lease runs: b gets nothing, not even a's imports.
    assert await backend.claim_work(b, now=T0) == []
    budget, held = await sc.budget(backend)
    assert (budget.limit, held) == (3, 3)


async def test_in_flight_imports_of_a_gone_claimer_are_adopted_with_their_slots(
    backend: SqliteStore,
) -> None:
    ids = [await _consent(backend, n) for n in range(4)]
    a = await _claimer(backend)
    jobs = await backend.claim_work(a, now=T0)
    assert len(jobs) == 3
    for job in jobs:
        await sc.begin_access(
            backend,
            claim_of(job),
            AccessKind.DEFAULT_IMPORT,
            now=T0,
            token_id=None,
            session_id=None,
        )
    # a dies; a sole claimer starts (the restart of a one-host daemon).
    b = await _claimer(backend, sole=True)
    adopted = await backend.claim_work(b, now=T0 + timedelta(seconds=1))
    # The three in flight are adopted (they keep their slots); the fourth waits for one.
    assert {j.import_id for j in adopted} == {j.import_id for j in jobs}
    assert set(ids) > {j.import_id for j in adopted}
    assert all(j.claim is not None and j.claim.epoch == 2 for j in adopted)
    _, held = await sc.budget(backend)
    assert held == 3


async def test_a_write_under_a_lost_claim_changes_nothing(backend: SqliteStore) -> None:
    await _consent(backend, 1)
    a = await _claimer(backend)
    [job] = await backend.claim_work(a, now=T0)
    old = claim_of(job)
    await sc.begin_access(backend, old, AccessKind.DEFAULT_IMPORT, now=T0, token_id=None)
    b = await _claimer(backend, sole=True)
    [adopted] = await backend.claim_work(b, now=T0)
    with pytest.raises(LeaseLost):
        await backend.advance(old, StepWrite(Step.COMMAND, command_id="c-old"), now=T0)
    with pytest.raises(LeaseLost):
        await sc.begin_access(backend, old, AccessKind.DEFAULT_IMPORT, now=T0, token_id=None)
    await backend.advance(claim_of(adopted), StepWrite(Step.COMMAND, command_id="c-new"), now=T0)
    record = await sc.get_import(backend, job.import_id)
    assert record is not None
    assert record.command_id == "c-new"


async def _sent_by_a_lapsed_claimer(backend: SqliteStore) -> tuple[Claim, int, ImportJob]:
    """a claims an import and records its Default Import; a's lease lapses (a zero lease, on
    either clock) and b adopts the import: a's claim, a's ledger id, b's job."""
    await _consent(backend, 1)
    a = await sc.register_claimer(backend, now=T0, ttl_seconds=0, sole=False, max_running=3)
    [job] = await backend.claim_work(a, now=T0)
    access = await sc.begin_access(
        backend, claim_of(job), AccessKind.DEFAULT_IMPORT, now=T0, token_id=None, session_id=None
    )
    assert isinstance(access, int)
    b = await _claimer(backend)
    [adopted] = await backend.claim_work(b, now=T0 + timedelta(seconds=1))
    return claim_of(job), access, adopted


async def test_the_sender_stores_its_command_id_after_its_claim_lapsed(
    backend: SqliteStore,
) -> None:
    old, access, adopted = await _sent_by_a_lapsed_claimer(backend)
    # b is told the reply may still reach a; a let go cleanly would not say so.
    assert adopted.reply_may_arrive
    late = StepWrite(Step.COMMAND, command_id="c-late", not_before=T0, access=access)
    await backend.advance(old, late, now=T0)
    record = await sc.get_import(backend, adopted.import_id)
    assert record is not None
    assert record.command_id == "c-late"
    # The import stays b's: b polls it, a's claim still writes nothing else.
    [job] = [j for j in await backend.open_jobs() if j.import_id == adopted.import_id]
    assert (job.claim, job.phase.value) == (adopted.claim, "polling")
    await backend.advance(claim_of(adopted), StepWrite(Step.POLL, not_before=T0), now=T0)
    with pytest.raises(LeaseLost):
        await backend.advance(old, StepWrite(Step.POLL, not_before=T0), now=T0)
    # Once a command id is stored, nobody's late one replaces it.
    with pytest.raises(LeaseLost):
        await backend.advance(old, replace(late, command_id="c-other"), now=T0)


async def test_a_late_command_id_is_refused_once_the_import_moved_on(
    backend: SqliteStore,
) -> None:
    old, access, adopted = await _sent_by_a_lapsed_claimer(backend)
    # b resolved the import by a second Default Import: a's command id comes too late.
    await sc.begin_access(
        backend,
        claim_of(adopted),
        AccessKind.DEFAULT_IMPORT,
        now=T0,
        token_id=None,
        session_id=None,
    )
    late = StepWrite(Step.COMMAND, command_id="c-late", not_before=T0, access=access)
    with pytest.raises(LeaseLost):
        await backend.advance(old, late, now=T0)
    # Nor after the import ended (failed as lost), nor without the ledger id it belongs to.
    failure = CommandFailure("DefaultImportLost", "lost")
    await sc.finish_failure(backend, claim_of(adopted), failure, now=T0)
    with pytest.raises(LeaseLost):
        await backend.advance(old, late, now=T0)
    record = await sc.get_import(backend, adopted.import_id)
    assert record is not None
    assert record.command_id is None


async def test_a_late_command_id_needs_the_ledger_id_of_the_last_default_import(
    backend: SqliteStore,
) -> None:
    old, access, adopted = await _sent_by_a_lapsed_claimer(backend)
    with pytest.raises(LeaseLost):
        await backend.advance(old, StepWrite(Step.COMMAND, command_id="c-x"), now=T0)
    with pytest.raises(LeaseLost):
        await backend.advance(
            old, StepWrite(Step.COMMAND, command_id="c-x", access=access + 1000), now=T0
        )
    record = await sc.get_import(backend, adopted.import_id)
    assert record is not None
    assert record.command_id is None


async def _reuse_sent(backend: SqliteStore, owner: str) -> tuple[str, ImportJob, int]:
    """A token's refresh queued and claimed, its Reuse recorded as sent: (token id, the
    claimed job, the Reuse's ledger row)."""
    _, token_id = await consent_import(backend, owner, 1, result({"PL01": ()}), now=T0)
    assert token_id is not None
    await backend.queue_refresh(token_id, now=T0, since=T0.date())
    [job] = await backend.claim_work(await _claimer(backend), now=T0)
    access = await sc.begin_access(
        backend, claim_of(job), AccessKind.REUSE, now=T0, token_id=token_id, quota=None
    )
    assert isinstance(access, int)
    return token_id, job, access


async def test_an_access_ends_with_the_step_it_leads_to_or_not_at_all(
    backend: SqliteStore,
) -> None:
    token_id, job, access = await _reuse_sent(backend, "step-after")
    claim = claim_of(job)
    session = StepWrite(Step.SESSION, session=Session("s-after", "sig-after"))
    # Under a lost claim neither is written: the access is not marked unsent (it still counts
    # against the quota) and the import stays in phase reusing.
    stale = replace(claim, epoch=claim.epoch + 1)
    with pytest.raises(LeaseLost):
        await backend.end_access(access, outcome="not_sent", step=StepAfter(stale, session, T0))
    ledger, _ = await backend.reuse_ledger([token_id], since=T0 - timedelta(days=1))
    assert len(ledger) == 1
    [reusing] = [j for j in await backend.open_jobs() if j.import_id == job.import_id]
    assert (reusing.phase.value, reusing.session) == ("reusing", None)
    # Under the claim both are, in one transaction.
    budget = await backend.end_access(access, outcome="ok", step=StepAfter(claim, session, T0))
    assert budget == (await sc.budget(backend))[0]
    [ready] = [j for j in await backend.open_jobs() if j.import_id == job.import_id]
    assert (ready.phase.value, ready.session) == ("ready", session.session)
    assert ready.claim == claim


async def test_a_reuse_ends_and_its_default_import_begins_together_or_not_at_all(
    backend: SqliteStore,
) -> None:
    token_id, job, reuse = await _reuse_sent(backend, "then-begin")
    claim = claim_of(job)
    session = StepWrite(Step.SESSION, session=Session("s-then", "sig-then"))
    started = events.import_started(job)
    then = AccessStart(AccessKind.DEFAULT_IMPORT, token_id, "s-then", started, T0)
    head = await sc.last_event_id(backend)
    # Under a lost claim nothing is written: no session, no Default Import, no event.
    stale = replace(claim, epoch=claim.epoch + 1)
    with pytest.raises(LeaseLost):
        await backend.end_then_begin_access(reuse, step=StepAfter(stale, session, T0), then=then)
    [reusing] = [j for j in await backend.open_jobs() if j.import_id == job.import_id]
    assert (reusing.phase.value, reusing.session, reusing.default_import_attempts) == (
        "reusing",
        None,
        0,
    )
    assert await sc.last_event_id(backend) == head
    # Under the claim all of it, in one transaction: the import stands in phase starting.
    budget, access = await backend.end_then_begin_access(
        reuse, step=StepAfter(claim, session, T0), then=then
    )
    assert access != reuse
    assert budget == (await sc.budget(backend))[0]
    [starting] = [j for j in await backend.open_jobs() if j.import_id == job.import_id]
    assert (starting.phase.value, starting.session) == ("starting", session.session)
    assert starting.default_import_attempts == 1
    assert starting.claim == claim
    [event] = await sc.list_events(backend, after=head, limit=10)
    assert (event.type, event.import_id) == ("import.started", job.import_id)
    ledger, _ = await backend.reuse_ledger([token_id], since=T0 - timedelta(days=1))
    assert len(ledger) == 1


async def test_an_import_let_go_cleanly_expects_no_late_reply(backend: SqliteStore) -> None:
    await _consent(backend, 1)
    a = await _claimer(backend)
    [job] = await backend.claim_work(a, now=T0)
    await sc.begin_access(
        backend, claim_of(job), AccessKind.DEFAULT_IMPORT, now=T0, token_id=None, session_id=None
    )
    await sc.release_claimer(backend, a, now=T0)
    [adopted] = await backend.claim_work(await _claimer(backend), now=T0)
    assert adopted.phase.value == "starting"
    assert not adopted.reply_may_arrive


async def test_a_step_the_table_does_not_allow_changes_nothing(backend: SqliteStore) -> None:
    await _consent(backend, 1)
    [job] = await backend.claim_work(await _claimer(backend), now=T0)
    # A queued import has no command to poll.
    with pytest.raises(LeaseLost):
        await backend.advance(claim_of(job), StepWrite(Step.POLL, not_before=T0), now=T0)


async def test_two_pipelines_worth_of_claimers_racing_never_exceed_the_budget(
    backend: SqliteStore,
) -> None:
    for n in range(30):
        await _consent(backend, n)
    claimers = [await _claimer(backend, max_running=8) for _ in range(4)]
    claimed: list[str] = []

    async def grab(claimer: str) -> None:
        claimed.extend(j.import_id for j in await backend.claim_work(claimer, now=T0))

    async with anyio.create_task_group() as tg:
        for claimer in claimers * 3:
            tg.start_soon(grab, claimer)
    assert len(claimed) == 8
    assert len(set(claimed)) == 8


async def test_the_quota_section_under_20_racing_attempts_records_exactly_the_limit(
    backend: SqliteStore,
) -> None:
    shared = "PL00SHARED"
    tokens: list[str] = []
    for n in range(20):
        _, token_id = await consent_import(
            backend, f"racer-{n}", n, result({shared: ()}), now=T0 - timedelta(days=2)
        )
        assert token_id is not None
        tokens.append(token_id)
    rule = _refresher(backend)
    queued: list[str] = []

    async def attempt(token_id: str) -> None:
        out = await backend.queue_refresh(token_id, now=T0, since=T0.date(), quota=rule)
        if isinstance(out, str):
            queued.append(out)

    async with anyio.create_task_group() as tg:
        for token_id in tokens:
            tg.start_soon(attempt, token_id)
    claimer = await _claimer(backend, max_running=20)
    jobs = await backend.claim_work(claimer, now=T0)
    sent: list[int | QuotaAnswer] = []

    async def reuse(index: int) -> None:
        job = jobs[index]
        sent.append(
            await sc.begin_access(
                backend, claim_of(job), AccessKind.REUSE, now=T0, token_id=job.token_id, quota=rule
            )
        )

    async with anyio.create_task_group() as tg:
        for index in range(len(jobs)):
            tg.start_soon(reuse, index)
    assert len([s for s in sent if isinstance(s, int)]) == 4
    ledger, _ = await backend.reuse_ledger(tokens, since=T0 - timedelta(days=1))
    assert len(ledger) == 4


async def test_the_tick_reports_the_earliest_plan_its_own_writes_leave(
    backend: SqliteStore,
) -> None:
    tokens: list[str] = []
    for n, iban in enumerate(("PL00EARLY", "PL00LATE")):
        _, token_id = await consent_import(
            backend, f"planned-{n}", n, result({iban: ()}), now=T0 - timedelta(days=2)
        )
        assert token_id is not None
        tokens.append(token_id)
    early, late = tokens
    await sc.set_plan(backend, early, at=T0, reason="scheduled", now=T0 - timedelta(days=1))
    await sc.set_plan(
        backend, late, at=T0 + timedelta(hours=3), reason="scheduled", now=T0 - timedelta(days=1)
    )
    rule = TickRule(_refresher(backend))
    # Nothing due yet: the reader's answer, nothing written.
    idle = await backend.plan_tick(now=T0 - timedelta(minutes=1), limit=10, planner=rule)
    assert (idle.due, idle.queued, idle.next_due_at) == ((), (), T0)
    ticked = await backend.plan_tick(now=T0, limit=10, planner=rule)
    assert [t.token_id for t in ticked.due] == [early]
    assert len(ticked.queued) == 1
    # The queued token's plan is cleared in the same transaction: the next wake-up is the
    # other token's, not the time that was just acted on.
    after = {t.token_id: t.next_refresh_at for t in await backend.list_tokens()}
    assert after[early] is None
    assert ticked.next_due_at == after[late] == T0 + timedelta(hours=3)


async def test_one_open_refresh_per_token_and_one_consent_per_session(
    backend: SqliteStore,
) -> None:
    _, token_id = await consent_import(backend, "uniq", 1, result({"PL01": ()}), now=T0)
    assert token_id is not None
    outs = []

    async def queue() -> None:
        outs.append(await backend.queue_refresh(token_id, now=T0, since=T0.date()))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(queue)
    assert len([o for o in outs if isinstance(o, str)]) == 1
    consent = ConsentIn("o", "same-session", "sig")
    submits = []

    async def submit() -> None:
        submits.append(
            await backend.submit_consent(
                consent, now=T0, since=T0.date(), expires_at=T0 + timedelta(days=1)
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(submit)
    assert len({s.import_id for s in submits}) == 1
    assert sum(s.created for s in submits) == 1


async def test_feed_ids_ascend_in_commit_order_without_gaps(backend: SqliteStore) -> None:
    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(_consent, backend, n)
    events = await sc.list_events(backend, after=0, limit=1000)
    assert [e.id for e in events] == list(range(1, 51))
    assert await sc.last_event_id(backend) == 50


async def test_a_bad_consent_fails_alone_in_its_batch(backend: SqliteStore) -> None:
    good = [ConsentIn(f"o-{n}", f"batch-{n}", f"signature-{n}") for n in range(5)]
    bad = ConsentIn("o-bad", "batch-bad", None)  # type: ignore[arg-type]
    outcomes: dict[str, SubmitOutcome | Exception] = {}

    async def submit(consent: ConsentIn) -> None:
        try:
            outcomes[consent.session_id] = await backend.submit_consent(
                consent, now=T0, since=T0.date(), expires_at=T0 + timedelta(days=1)
            )
        except Exception as exc:
            outcomes[consent.session_id] = exc

    async with anyio.create_task_group() as tg:
        for consent in [*good[:2], bad, *good[2:]]:
            tg.start_soon(submit, consent)
    assert isinstance(outcomes["batch-bad"], Exception)
    assert all(not isinstance(outcomes[c.session_id], Exception) for c in good)
    events = await sc.list_events(backend, after=0, limit=100)
    assert [e.id for e in events] == list(range(1, 6))
    assert {e.import_id for e in events} == {
        o.import_id for o in outcomes.values() if isinstance(o, SubmitOutcome)
    }


async def test_a_batch_of_new_consents_and_repeats_gives_what_lone_submits_give(
    backend: SqliteStore,
) -> None:
    expires = T0 + timedelta(days=90)
    stored = [
        await backend.submit_consent(
            ConsentIn(f"o-{n % 2}", f"old-{n}", f"signature-{n}"),
            now=T0,
            since=T0.date(),
            expires_at=expires,
        )
        for n in range(3)
    ]
    # Owners shared with stored consents and with each other, tokens on some, repeats of the
    # stored ones: submitted at once, so that they share batches.
    fresh = [
        ConsentIn(f"o-{n % 3}", f"new-{n}", f"signature-{n}", f"maid-{n}" if n % 2 else None)
        for n in range(8)
    ]
    repeats = [ConsentIn(f"o-{n % 2}", f"old-{n}", f"signature-{n}") for n in range(3)]
    outcomes: dict[str, SubmitOutcome] = {}

    async def submit(consent: ConsentIn) -> None:
        outcomes[consent.session_id] = await backend.submit_consent(
            consent, now=T0, since=T0.date(), expires_at=expires
        )

    async with anyio.create_task_group() as tg:
        for consent in [*fresh[:4], *repeats, *fresh[4:]]:
            tg.start_soon(submit, consent)
    for n, before in enumerate(stored):
        again = outcomes[f"old-{n}"]
        assert (again.import_id, again.created) == (before.import_id, False)
        assert again.stored is not None
        assert again.stored.owner_external_id == f"o-{n % 2}"
        assert again.stored.session_signature == f"signature-{n}"
    for consent in fresh:
        out = outcomes[consent.session_id]
        assert out.created
        assert (out.token_id is not None) == (consent.multiple_access_id is not None)
        record = await sc.get_import(backend, out.import_id)
        assert record is not None
        assert (record.owner_external_id, record.token_id) == (
            consent.owner_external_id,
            out.token_id,
        )
    events = await sc.list_events(backend, after=0, limit=100)
    assert [e.id for e in events] == list(range(1, 12))
    by_import = {e.import_id: e for e in events}
    for consent in fresh:
        event = by_import[outcomes[consent.session_id].import_id]
        assert event.type == "consent.received"
        assert event.owner_external_id == consent.owner_external_id
        assert event.data["multipleAccess"] is (consent.multiple_access_id is not None)


# -- the domain decides, the store records ---------------------------------------------------


async def test_lifecycle_writes_apply_once_and_append_what_they_are_given(
    backend: SqliteStore,
) -> None:
    _, token_id = await consent_import(backend, "life", 1, result({"PL01": ()}), now=T0)
    assert token_id is not None
    refresh = await backend.queue_refresh(token_id, now=T0, since=T0.date())
    assert isinstance(refresh, str)
    [token] = await backend.list_tokens(token_ids=[token_id])
    head = await sc.last_event_id(backend)
    warned = TokenWarned(token_id, 7, events.token_expiring(token, 7))
    moved = WarningRescheduled(token_id, T0 + timedelta(days=100))
    assert await backend.record_lifecycle([warned, moved, warned], now=T0) == [True, True, False]
    failure = events.ended_refresh_failure(TokenState.REVOKED)
    end = TokenEnd(
        token_id,
        TokenState.REVOKED,
        "test",
        events.token_ended(token, TokenState.REVOKED, "test"),
        failure,
    )
    assert await backend.record_lifecycle([end], now=T0) == [True]
    assert await backend.record_lifecycle([end, warned], now=T0) == [False, False]
    appended = await sc.list_events(backend, after=head, limit=10)
    assert [(e.type, e.import_id) for e in appended] == [
        ("token.expiring", None),
        ("token.revoked", None),
        ("import.failed", refresh),
    ]
    assert appended[2].data == {
        "errorName": "TokenRevoked",
        "errorMessage": failure.message,
        "polls": 0,
    }
    [ended] = await backend.list_tokens(token_ids=[token_id])
    assert (ended.state, ended.warned_days) == (TokenState.REVOKED, (7,))
    with pytest.raises(NotFoundError):
        await backend.record_lifecycle([replace(end, token_id="tok_nope")], now=T0)


async def test_a_refusal_fails_the_import_keeps_the_reply_and_pauses_the_token(
    backend: SqliteStore,
) -> None:
    _, token_id = await consent_import(backend, "fail", 1, result({"PL01": ()}), now=T0)
    assert token_id is not None
    claimer = await _claimer(backend)
    appended_types: list[list[str]] = []
    for attempt in range(2):
        refresh = await backend.queue_refresh(token_id, now=T0, since=T0.date())
        assert isinstance(refresh, str), attempt
        [job] = await backend.claim_work(claimer, now=T0)
        head = await sc.last_event_id(backend)
        write = events.refused(job, CommandFailure("UnexpectedReply", "?"), b"gz-reply")
        assert await backend.advance(claim_of(job), write, now=T0) == []
        appended_types.append([e.type for e in await sc.list_events(backend, after=head, limit=9)])
        assert await sc.refused_reply(backend, refresh) == ("UnexpectedReply", b"gz-reply")
    assert appended_types == [["import.failed", "token.refresh_paused"]] * 2
    [token] = await backend.list_tokens(token_ids=[token_id])
    assert (token.state, token.plan_reason, token.failures) == (
        TokenState.ACTIVE,
        "refresh_paused",
        2,
    )
    # A dead token leaves active with its event; nothing refreshes it any more.
    refresh = await backend.queue_refresh(token_id, now=T0, since=T0.date())
    assert isinstance(refresh, str)
    [job] = await backend.claim_work(claimer, now=T0)
    head = await sc.last_event_id(backend)
    dead = events.failed(job, CommandFailure("InvalidMultipleAccessId", "dead"))
    reauth = events.token_reauth_required(job, "InvalidMultipleAccessId")
    await backend.advance(
        claim_of(job), replace(dead, reauth_required=True, token_event=reauth), now=T0
    )
    types = [e.type for e in await sc.list_events(backend, after=head, limit=9)]
    assert types == ["import.failed", "token.reauth_required"]
    [token] = await backend.list_tokens(token_ids=[token_id])
    assert (token.state, token.state_reason) == (
        TokenState.REAUTH_REQUIRED,
        "InvalidMultipleAccessId",
    )
    with pytest.raises(ConflictError):
        await backend.queue_refresh(token_id, now=T0, since=T0.date())


async def test_reads_return_the_head_with_their_page(backend: SqliteStore) -> None:
    for n in range(3):
        await consent_import(backend, f"reader-{n}", n, result({f"PL0{n}": ()}), now=T0, raw=b"r")
    page = await backend.events(after=1, limit=2)
    assert ([e.id for e in page.events], page.head) == ([2, 3], await sc.last_event_id(backend))
    assert page.head > 3
    owners = await sc.replay_owners(backend)
    assert owners == ["reader-0", "reader-1", "reader-2"]
    batch = await backend.raw_replies(after_owner="reader-0")
    assert batch is not None
    assert (batch.owner_external_id, [r[2] for r in batch.replies]) == ("reader-1", [b"r"])
    status = await backend.status(
        now=T0 + timedelta(hours=1), expiring_within=timedelta(days=7), stale_after=timedelta(1)
    )
    assert (status.tokens["active"], status.imports["successful"]) == (3, 3)
    assert (status.event_head, status.failed_last_hour) == (page.head, 0)
    view = await backend.owner("reader-1")
    assert view is not None
    assert [a.iban for a in view.accounts] == ["PL01"]
    assert await backend.owner("nobody") is None


async def test_imports_list_gives_each_filter_what_filtering_every_import_gives(
    backend: SqliteStore,
) -> None:
    """imports.list picks a statement per filter (each on its own index); whichever it picks,
    the answer is the matching imports, ended and open alike, newest first (ties by id)."""
    tokens: list[str] = []
    for n in range(3):
        # Ended initial imports of three owners, the first two at the same moment.
        _, token_id = await consent_import(
            backend, f"lister-{n}", n, result({f"PL1{n}": ()}), now=T0 + timedelta(minutes=n // 2)
        )
        assert token_id is not None
        tokens.append(token_id)
    claimer = await _claimer(backend)
    for token_id in tokens[:2]:
        # An ended (failed) refresh each, then an open one (queued) of the first token.
        assert isinstance(await backend.queue_refresh(token_id, now=T0, since=T0.date()), str)
        [job] = await backend.claim_work(claimer, now=T0)
        refused = events.refused(job, CommandFailure("UnexpectedReply", "?"), b"reply")
        await backend.advance(claim_of(job), refused, now=T0)
    # Open ones: a queued refresh, and two initials without a token, one of them polling.
    assert isinstance(await backend.queue_refresh(tokens[0], now=T0, since=T0.date()), str)
    running = await _consent(backend, 7)
    await _consent(backend, 8)
    await to_polling(backend, running, now=T0)

    every = await sc.list_imports(backend, limit=1000)
    assert len(every) == 3 + 2 + 1 + 2
    assert running in {r.import_id for r in every}
    newest_first = sorted(every, key=lambda r: (r.created_at, r.import_id), reverse=True)
    assert [r.import_id for r in every] == [r.import_id for r in newest_first]
    assert {r.state for r in every} == set(ImportState)

    checked = 0
    for owner in (None, "lister-0", "lister-2", "owner-7", "nobody"):
        for token in (None, tokens[0], tokens[2]):
            for state in (None, *ImportState):
                for kind in (None, *ImportKind):
                    for limit in (1000, 2):
                        want = [
                            r.import_id
                            for r in every
                            if owner in (None, r.owner_external_id)
                            and token in (None, r.token_id)
                            and state in (None, r.state)
                            and kind in (None, r.kind)
                        ][:limit]
                        got = await sc.list_imports(
                            backend,
                            owner_external_id=owner,
                            token_id=token,
                            state=state,
                            kind=kind,
                            limit=limit,
                        )
                        where = (owner, token, state, kind, limit)
                        assert [r.import_id for r in got] == want, where
                        checked += bool(want)
    assert checked > 100, checked
