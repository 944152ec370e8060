"""What the PostgreSQL store adds for several daemons: the leader lease, wake-ups across
connections, the cluster's status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from aisd.store import AccessKind, ConsentIn, RevocationInFlight, RevocationSent
from aisd.store.postgresql import PostgresStore, open_postgres_store
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
