"""Driving a stored import through the pipeline's fenced steps by hand, as a process does
(and then stops, as a crash leaves it)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from aisd.kontomatik import ImportResult
from aisd.phases import Step
from aisd.store import AccessKind, Claim, ImportJob, ImportPhase, SqliteStore, StepWrite
from tests import store_calls as sc


async def claim(store: SqliteStore, import_id: str, *, now: datetime | None = None) -> ImportJob:
    """Claim ``import_id`` under a claimer of its own (other imports claimed with it are let go)."""
    now = now or datetime.now(UTC)
    claimer = await sc.register_claimer(store, now=now, ttl_seconds=3600, sole=False, max_running=8)
    jobs = await store.claim_work(claimer, now=now)
    for other in jobs:
        if other.import_id != import_id and other.claim is not None:
            await store.advance(other.claim, StepWrite(Step.LET_GO), now=now)
    [job] = [j for j in jobs if j.import_id == import_id]
    return job


async def stop(store: SqliteStore, job_claim: Claim, *, now: datetime | None = None) -> None:
    """The claimer stops (as a killed one's lease ends): the import stays as recorded."""
    await sc.release_claimer(store, job_claim.claimer, now=now or datetime.now(UTC))


def claim_of(job: ImportJob) -> Claim:
    """The job's claim."""
    assert job.claim is not None
    return job.claim


async def to_polling(
    store: SqliteStore, import_id: str, *, now: datetime, command_id: str | None = None
) -> Claim:
    """Claim an initial import, record its Default Import and its command: it polls now."""
    job = await claim(store, import_id, now=now)
    c = claim_of(job)
    await sc.begin_access(
        store,
        c,
        AccessKind.DEFAULT_IMPORT,
        now=now,
        token_id=job.token_id,
        session_id=None if job.session is None else job.session.session_id,
    )
    write = StepWrite(Step.COMMAND, command_id=command_id or f"cmd-{import_id}", not_before=now)
    await store.advance(c, write, now=now)
    return c


async def succeed(
    store: SqliteStore,
    import_id: str,
    res: ImportResult,
    *,
    now: datetime,
    raw: bytes | None = None,
    coverage_start: date = date(2000, 1, 1),
    polls: int = 1,
) -> None:
    """Drive an import (initial or refresh) to success at ``now``."""
    c = await to_polling(store, import_id, now=now)
    await sc.finish_success(
        store, c, res, now=now, raw_reply=raw, coverage_start=coverage_start, polls=polls
    )
    await stop(store, c, now=now)


async def queued(store: SqliteStore, *, now: datetime, limit: int) -> list[ImportJob]:
    """The queued imports a claim at ``now`` takes first, in claim order."""
    jobs = await store.open_jobs()
    due = [j for j in jobs if j.phase == ImportPhase.QUEUED and (j.not_before or now) <= now]
    return due[:limit]


async def in_flight(store: SqliteStore) -> list[ImportJob]:
    """Imports past the queue and not ended."""
    return [j for j in await store.open_jobs() if j.phase != ImportPhase.QUEUED]


async def held(store: SqliteStore, import_id: str) -> Claim:
    """The claim an open import is held under (claimed now when nobody holds it); for an ended
    or unknown import, a claim nobody holds."""
    for job in await store.open_jobs():
        if job.import_id == import_id:
            return job.claim or claim_of(await claim(store, import_id))
    return Claim(import_id, "clm_nobody", 0)
