"""What the PostgreSQL store adds for several daemons: the leader lease, wake-ups across
connections, the cluster's status."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

import anyio
import anyio.to_thread
import psycopg
import pytest

from aisd.clock import SystemClock
from aisd.cluster import Leadership
from aisd.intake import differing_field
from aisd.store import (
    AccessKind,
    ConsentIn,
    LeaderTerm,
    RevocationInFlight,
    RevocationSent,
    StaleLeader,
    SubmitOutcome,
    current_term,
    under_term,
)
from aisd.store.postgresql import PostgresStore, open_postgres_store
from aisd.store.postgresql._dialect import SyncDb, row_factory
from aisd.store.sqlite._intake import submit_one
from tests import store_calls as sc

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two daemons have."""
    a = await open_postgres_store(postgres_url)
    b = await open_postgres_store(postgres_url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_one_leader_at_a_time_and_a_new_term_when_it_changes(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    term = await a.take_leadership("a", ttl_seconds=30)
    assert term == 1
    assert await b.take_leadership("b", ttl_seconds=30) is None
    assert await a.take_leadership("a", ttl_seconds=30) == 1  # a renewal keeps the term
    await a.resign_leadership("a")
    assert await b.take_leadership("b", ttl_seconds=30) == 2
    assert await a.take_leadership("a", ttl_seconds=30) is None
    cluster = await a.cluster()
    assert (cluster["leader"], cluster["leaderTerm"]) == ("b", 2)


async def test_a_lapsed_leader_lease_is_taken_over(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    # A lease of no length has lapsed by the time anyone else asks (the database's clock).
    assert await a.take_leadership("a", ttl_seconds=0) == 1
    assert await b.take_leadership("b", ttl_seconds=30) == 2
    assert await a.take_leadership("a", ttl_seconds=30) is None


async def test_work_committed_on_one_connection_wakes_the_listener_of_another(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    woken = anyio.Event()
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1
        if wakes > 1:  # the first is the listener's own start-up wake
            woken.set()

    async with anyio.create_task_group() as tg:
        await tg.start(b.listen, wake)
        await a.submit_consent(
            ConsentIn("o", "s-1", "sig"),
            now=T0,
            since=T0.date(),
            expires_at=T0 + timedelta(days=1),
        )
        with anyio.fail_after(10):
            await woken.wait()
        tg.cancel_scope.cancel()


async def test_the_cluster_shows_each_claimer_with_its_slots(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    for n in range(3):
        await a.submit_consent(
            ConsentIn(f"o-{n}", f"s-{n}", "sig"),
            now=T0,
            since=T0.date(),
            expires_at=T0 + timedelta(days=1),
        )
    first = await sc.register_claimer(a, now=T0, ttl_seconds=30, sole=False, max_running=2)
    second = await sc.register_claimer(b, now=T0, ttl_seconds=30, sole=False, max_running=2)
    assert len(await a.claim_work(first, now=T0)) == 2
    assert await b.claim_work(second, now=T0) == []
    daemons = {d["claimer"]: d for d in (await b.cluster())["daemons"]}
    assert daemons[first]["slotsHeld"] == 2
    assert daemons[second]["slotsHeld"] == 0
    assert all(d["live"] and d["heartbeatAgeSeconds"] < 30 for d in daemons.values())


async def test_a_lapsed_claimer_lease_is_not_renewed_and_its_work_is_adopted(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await a.submit_consent(
        ConsentIn("o", "s", "sig"), now=T0, since=T0.date(), expires_at=T0 + timedelta(days=1)
    )
    # A lease of no length: lapsed at once on the database's clock, as a frozen daemon's is.
    frozen = await sc.register_claimer(a, now=T0, ttl_seconds=0, sole=False, max_running=8)
    [job] = await a.claim_work(frozen, now=T0)
    assert job.claim is not None
    survivor = await sc.register_claimer(b, now=T0, ttl_seconds=30, sole=False, max_running=8)
    daemons = {d["claimer"]: d for d in (await b.cluster())["daemons"]}
    assert (daemons[frozen]["live"], daemons[survivor]["live"]) == (False, True)
    # The database clock ended the lease; renewing it now is refused, and the queued import
    # it held goes back to the queue for the survivor.
    assert await sc.renew_claimer(a, frozen, now=T0, ttl_seconds=30) is False
    [adopted] = await b.claim_work(survivor, now=T0)
    assert adopted.import_id == job.import_id
    assert adopted.claim is not None
    assert adopted.claim.epoch == job.claim.epoch + 1


async def test_two_daemons_revoking_one_token_send_one_revoke(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    out = await a.submit_consent(
        ConsentIn("o", "s", "sig", multiple_access_id="maid"),
        now=T0,
        since=T0.date(),
        expires_at=T0 + timedelta(days=1),
    )
    assert out.token_id is not None
    token_id = out.token_id
    results: list[int | type[Exception]] = []

    async def revoke(store: PostgresStore) -> None:
        try:
            results.append(
                await sc.record_access(store, AccessKind.REVOKE, now=T0, token_id=token_id)
            )
        except (RevocationInFlight, RevocationSent) as exc:
            results.append(type(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(revoke, a)
        tg.start_soon(revoke, b)
    sent = [r for r in results if isinstance(r, int)]
    assert len(sent) == 1
    assert RevocationInFlight in results
    await sc.record_access_outcome(a, sent[0], outcome="ok")
    with pytest.raises(RevocationSent):
        await sc.record_access(b, AccessKind.REVOKE, now=T0, token_id=token_id)
    # A revocation whose answer was lost long ago (its daemon died) no longer blocks one.
    other = await a.submit_consent(
        ConsentIn("o2", "s2", "sig", multiple_access_id="maid2"),
        now=T0,
        since=T0.date(),
        expires_at=T0 + timedelta(days=1),
    )
    assert other.token_id is not None
    await sc.record_access(a, AccessKind.REVOKE, now=T0, token_id=other.token_id)
    later = T0 + timedelta(minutes=10)
    assert isinstance(
        await sc.record_access(b, AccessKind.REVOKE, now=later, token_id=other.token_id), int
    )


async def test_each_event_names_the_daemon_that_appended_it(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    assert a.origin != b.origin
    for store, session in ((a, "s-a"), (b, "s-b"), (a, "s-a2")):
        await store.submit_consent(
            ConsentIn("o", session, "sig"),
            now=T0,
            since=T0.date(),
            expires_at=T0 + timedelta(days=1),
        )
    # Whoever reads the feed sees who appended each event.
    for reader in (a, b):
        events = await sc.list_events(reader, after=0, limit=10)
        assert [e.origin for e in events] == [a.origin, b.origin, a.origin]
    host, pid, nonce = a.origin.split(":")
    assert int(pid) == os.getpid()
    assert host
    assert len(nonce) == 8


class _StillClock(SystemClock):
    """The wall and monotonic clocks, and sleeps that never end: the leadership under test
    takes its lease once and never renews it (as a leader frozen after its last renewal)."""

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep_forever()


async def test_a_stale_leaders_duty_after_takeover_writes_nothing(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    out = await a.submit_consent(
        ConsentIn("o", "s", "sig", multiple_access_id="maid-fenced"),
        now=T0,
        since=T0.date(),
        expires_at=T0 + timedelta(days=1),
    )
    assert out.token_id is not None
    later = T0 + timedelta(days=2)
    leadership = Leadership(a, _StillClock())
    async with anyio.create_task_group() as tg:
        await tg.start(leadership.run)
        assert leadership.leading()
        stale = leadership.term
        assert stale is not None
        with leadership.duty():
            assert current_term() == LeaderTerm(a.origin, stale)
        # The lease passes to b behind a's back, as when a was frozen past it; a's local
        # deadline has not passed, so a still believes it leads.
        await a.resign_leadership(a.origin)
        current = stale + 1
        assert await b.take_leadership(b.origin, ttl_seconds=30) == current
        assert leadership.leading()
        events_before = await sc.last_event_id(a)
        with leadership.duty():
            # Expiry (the tick's first write) and housekeeping are refused whole.
            with pytest.raises(StaleLeader):
                await sc.expire_tokens(a, now=later)
            with pytest.raises(StaleLeader):
                await sc.purge_raw_replies(a, older_than=later)
        tg.cancel_scope.cancel()
    [token] = await a.list_tokens(token_ids=[out.token_id])
    assert token.state == "active"
    assert await sc.last_event_id(a) == events_before
    # The same duty under the current term writes; done again, it finds nothing more to do.
    with under_term(LeaderTerm(b.origin, current)):
        assert await sc.expire_tokens(b, now=later) == [out.token_id]
        assert await sc.expire_tokens(b, now=later) == []
    assert [e.type for e in await sc.list_events(a, after=events_before, limit=10)] == [
        "token.expired"
    ]


async def _submit_into(
    outcomes: list[SubmitOutcome], store: PostgresStore, consent: ConsentIn
) -> None:
    outcomes.append(
        await store.submit_consent(
            consent, now=T0, since=T0.date(), expires_at=T0 + timedelta(days=90)
        )
    )


async def test_one_session_submitted_on_two_hosts_at_once_gives_both_the_same_ids(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    for n in range(20):
        # New owners and tokens each round; half the rounds share one owner, whose row the
        # racing transactions both want.
        consent = ConsentIn(
            f"racer-{n % 2}" if n % 4 else f"racer-new-{n}",
            f"race-{n}",
            "sig-race",
            multiple_access_id=f"maid-race-{n}",
        )
        outcomes: list[SubmitOutcome] = []
        async with anyio.create_task_group() as tg:
            for store in (a, b, a, b):
                tg.start_soon(_submit_into, outcomes, store, consent)
        assert len({(o.import_id, o.token_id) for o in outcomes}) == 1, outcomes
        assert sorted(o.created for o in outcomes) == [False, False, False, True]
        assert outcomes[0].token_id is not None
    events = await sc.list_events(a, after=0, limit=100)
    assert [e.type for e in events] == ["consent.received"] * 20
    # Two different consents under one sessionId: one is stored, the other is told what the
    # stored one holds, and the use case refuses it (-32009), whichever host it reached.
    first, second = ConsentIn("x", "race-clash", "sig-one"), ConsentIn("x", "race-clash", "sig-two")
    clash: list[SubmitOutcome] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_submit_into, clash, a, first)
        tg.start_soon(_submit_into, clash, b, second)
    [won] = [o for o in clash if o.created]
    [lost] = [o for o in clash if not o.created]
    assert lost.stored is not None
    loser = second if lost.stored.session_signature == "sig-one" else first
    assert differing_field(loser, lost.stored) == "sessionIdSignature"
    assert (lost.import_id, lost.token_id) == (won.import_id, won.token_id)


async def test_a_submit_that_loses_its_session_to_a_writer_without_the_lock_gets_its_ids(
    stores: tuple[PostgresStore, PostgresStore], postgres_url: str
) -> None:
    a, _ = stores
    consent = ConsentIn("lost-race", "s-lost", "sig-lost", multiple_access_id="maid-lost")
    expires_at = T0 + timedelta(days=90)
    # A writer that stores the same session without the session lock, its transaction open.
    winner = await anyio.to_thread.run_sync(
        partial(psycopg.connect, postgres_url, row_factory=row_factory)
    )
    try:
        db = cast(sqlite3.Connection, SyncDb(winner))
        won, _ = await anyio.to_thread.run_sync(
            partial(submit_one, db, consent, now=T0, since=T0.date(), expires_at=expires_at)
        )
        outcomes: list[SubmitOutcome] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_submit_into, outcomes, a, consent)
            # The store's insert waits on the winner's rows; the winner commits.
            await _until_waiting_on_a_lock(a)
            await anyio.to_thread.run_sync(winner.commit)
    finally:
        await anyio.to_thread.run_sync(winner.close)
    [outcome] = outcomes
    assert (outcome.import_id, outcome.token_id, outcome.created) == (
        won.import_id,
        won.token_id,
        False,
    )
    assert outcome.stored is not None
    assert outcome.stored.owner_external_id == "lost-race"


async def _until_waiting_on_a_lock(store: PostgresStore) -> None:
    for _ in range(400):
        found = await store._reader.execute_fetchall(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        if int(next(iter(found))[0]) > 0:
            return
        await anyio.sleep(0.05)
    pytest.fail("the submit never waited on the other writer's rows")
