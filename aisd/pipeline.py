"""The import pipeline: drives every import from the queue to a final state.

At most ``max_running`` imports hold a *slot* at once; a slot stands for one command running
upstream (a Reuse Multiple Access in flight or a Default Import not yet finished), so the budget
is shared by every kind of command. Slots are rows in the store, taken in the transaction that
claims an import; the limit lowered after ``JobsQuotaExceeded`` is stored there too. The
pipeline drives only what it has claimed under its lease, and every step it records is fenced
on that claim: a step whose claim was lost (another process adopted the import) stops before
anything more is sent upstream. Each step is written to the store before the call it describes
is sent, so a restart resumes exactly where the previous process stood: a command that was
running is polled again, never started again.
"""

from __future__ import annotations

import contextlib
import gzip
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from aisd import events
from aisd.clock import Clock
from aisd.kontomatik import (
    Command,
    CommandFailure,
    CommandState,
    JobsQuotaExceededError,
    KontomatikClient,
    KontomatikError,
    QuotaError,
    RetryLaterError,
    SessionDeadError,
    TokenDeadError,
    UnauthorizedError,
    UnexpectedReplyError,
)
from aisd.merge import owner_mismatch
from aisd.phases import Step
from aisd.polling import (
    Aim,
    DurationEstimates,
    backoff,
    jobs_quota_delay,
    late_reply_grace,
    poll_delay,
)
from aisd.settings import Settings
from aisd.store import (
    AccessKind,
    AccessStart,
    Claim,
    Fail,
    ImportJob,
    ImportKind,
    ImportPhase,
    ImportQuery,
    LeaseEnd,
    LeaseLost,
    LeaseRenew,
    LeaseStart,
    QuotaAnswer,
    QuotaRule,
    StepAfter,
    StepWrite,
    StorageUnavailable,
    Store,
    Succeed,
)

log = structlog.get_logger("aisd.pipeline")

# After a Default Import whose reply was lost, the provider's answer to a second one tells us
# what happened: it started (DefaultImportAlreadyExecuted) and its command id is lost with it.
LOST_IMPORT = "DefaultImportLost"
# Kept instead of upstream's wording: it says what the refusal means for the token.
ACCESS_LIMIT_MESSAGE = (
    "Upstream refused the access: the bank account's rolling 24 h limit is used up."
)
# How long to keep polling a command whose polls keep failing transiently before giving up.
POLL_DEADLINE_SECONDS = 1800.0
# After the database refuses a write (disk full, read-only), dispatching pauses this long,
# doubling while the retries keep failing: every import would fail alike, so no spinning.
STORAGE_PAUSE_SECONDS = 1.0
STORAGE_PAUSE_MAX_SECONDS = 30.0
# A poll sent this much before its aim still counts as the aimed one (clocks round).
AIM_TOLERANCE_SECONDS = 0.001
# Unreadable elements of one reply logged one by one at most (all are counted in the event).
MAX_SKIPPED_LOGGED = 100


# The quota rule asked, inside the store's quota section, before every Reuse Multiple Access.
ReuseGate = QuotaRule


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The pipeline's knobs, taken from the settings."""

    max_running: int = 8
    poll_min_seconds: float = 2.0
    poll_max_seconds: float = 5.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    idle_recheck_seconds: float = 1.0
    # After MultipleAccessLimitExceeded (someone else used the account's quota), wait about one
    # refresh interval: their accesses leave the window at unknown times, so no retry storm.
    upstream_defer_seconds: float = 6 * 3600.0
    # The claimer's lease: renewed every fifth of it; nothing is sent once it may have lapsed.
    lease_seconds: float = 15.0
    # Sole claimer of the database (the daemon, holding the instance lock): every other lease
    # ends when it starts, so what a killed predecessor held is adopted at once.
    sole_claimer: bool = False
    # How long an import adopted in phase starting from a lapsed claimer waits for that
    # claimer to store its command id late, before a second Default Import resolves it.
    reply_grace_seconds: float = late_reply_grace(
        request_timeout=30.0, storage_retry_max=STORAGE_PAUSE_MAX_SECONDS
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        """The knobs the settings set; the rest keep their defaults."""
        return cls(
            max_running=settings.max_running_commands,
            poll_min_seconds=settings.poll_min_seconds,
            poll_max_seconds=settings.poll_max_seconds,
            upstream_defer_seconds=86400 / settings.refreshes_per_day,
            sole_claimer=True,
            reply_grace_seconds=late_reply_grace(
                request_timeout=settings.http_timeout_seconds,
                storage_retry_max=STORAGE_PAUSE_MAX_SECONDS,
            ),
        )


@dataclass(slots=True)
class _Release:
    """A slot's hand-over running in its own task: done once the slot is freed (and the next
    imports started), with the error that stopped it, if any."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None


def _sends_at_once(job: ImportJob) -> bool:
    """Whether a claimed import's first step is a write and then a request sent at once (what
    a handoff waits for): not one adopted mid-poll or waiting for its next step."""
    return job.phase in (ImportPhase.QUEUED, ImportPhase.READY, ImportPhase.STARTING) and (
        job.phase == ImportPhase.QUEUED or job.not_before is None
    )


async def _released(release: _Release | None) -> None:
    """Wait for a begun hand-over (the import's next write must follow it); raise its error."""
    if release is None:
        return
    await release.done.wait()
    if release.error is not None:
        raise release.error


@dataclass(frozen=True, slots=True)
class Wait:
    """A step's answer: wait this long holding the slot, then go on with ``job``."""

    seconds: float
    job: ImportJob


class Pipeline:
    """Moves imports from ``queued`` to ``successful`` or ``failed`` within the slot budget."""

    def __init__(
        self,
        store: Store,
        client: KontomatikClient,
        config: PipelineConfig,
        clock: Clock,
        *,
        gate: ReuseGate | None = None,
        on_change: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        on_command_end: Callable[[float, float | None, float | None], None] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._config = config
        self._clock = clock
        self._gate = gate
        self._on_change = on_change or (lambda: None)
        # Told (finished at, last seen running at, expected duration) of each command's final
        # poll, in seconds after its Default Import: for the end-to-poll delay metric.
        self._on_command_end = on_command_end or (lambda finished, running, expected: None)
        self._rng = rng or random.Random()
        # Claimed imports this pipeline drives that hold a slot (for status; the budget itself
        # is the store's slot rows).
        self._active: set[str] = set()
        # When each running command's Default Import was answered (monotonic clock).
        self._accepted_at: dict[str, tuple[float, str | None]] = {}
        # Results are stored one at a time: the store's writer serves its callers in order, and
        # a queue of large results would hold back the short writes that start the next imports.
        self._storing = anyio.Lock()
        # Imports whose slot is being handed on (the ended one until its slot is freed, the
        # next one until its first write is done): large results wait for them.
        self._handoffs: set[str] = set()
        self._handoffs_changed = anyio.Event()
        # Imports whose slot was handed on by their command's end (its claim of the next work).
        self._handed_on: set[str] = set()
        # Work queued while every slot was held, since the last dispatch.
        self._queued_while_full = False
        self._wake = anyio.Event()
        self._accepting = True
        self._estimates = DurationEstimates()
        self._limit = config.max_running
        self._jobs_quota_strikes = 0
        self._claimer: str | None = None
        self._to_let_go: dict[Claim, datetime | None] = {}
        self._tg: TaskGroup | None = None
        self._lease_deadline = float("-inf")
        self.last_dispatch_at: float = clock.monotonic()
        self._storage_pause = 0.0
        self._paused_until = 0.0

    # -- observation -------------------------------------------------------------------------

    @property
    def running_commands(self) -> int:
        """Imports this pipeline drives that hold a slot right now."""
        return len(self._active)

    @property
    def limit(self) -> int:
        """The current slot budget (below the setting while upstream pushes back)."""
        return self._limit

    # -- control -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the queue now (after a submit, a planner tick, a finished import)."""
        self._wake.set()

    def work_queued(self) -> None:
        """New queued work (a consent's first import): looked at now, unless this pipeline
        holds every slot of the budget already; the import that frees one looks again. A burst
        of consents while every slot is busy so costs no claim transaction each."""
        if len(self._active) < self._limit:
            self._wake.set()
        else:
            # It may have come after a handoff's claim, while that slot still counted as held:
            # the next import to end looks again, even one whose slot was handed on (see _drive).
            self._queued_while_full = True

    def stop_accepting(self) -> None:
        """Start no new command (graceful stop); in-flight ones stay recorded for the next start."""
        self._accepting = False
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take a lease and dispatch until cancelled: in-flight imports nobody drives are
        adopted first. On the way out the lease ends and every import is let go, recorded as
        it stands, for the next claimer."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await self._register_until_stored()
                if not self._config.sole_claimer:
                    # A sole claimer's lease cannot pass to anyone while it lives: the next
                    # sole claimer ends it when it starts, so it needs no heartbeat.
                    tg.start_soon(self._heartbeat)
                while True:
                    self.last_dispatch_at = self._clock.monotonic()
                    if self._accepting and self._clock.monotonic() >= self._paused_until:
                        try:
                            await self._dispatch(tg)
                        except StorageUnavailable:
                            # The store logs an outage, rate-limited; the next round claims again.
                            pass
                        except Exception:
                            # E.g. another process holding a write transaction past busy_timeout:
                            # the next round claims again, instead of the error ending this task
                            # group and with it every import it drives and the daemon.
                            log.exception("pipeline.dispatch_failed")
                    with anyio.move_on_after(self._config.idle_recheck_seconds):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                if self._claimer is not None:
                    await self._store.lease(LeaseEnd(self._claimer), now=self._clock.now())

    async def _register_until_stored(self) -> None:
        while True:
            try:
                await self._register()
                return
            except StorageUnavailable:
                # Nothing is driven without a lease; the store has logged why.
                self.last_dispatch_at = self._clock.monotonic()
                self._pause_for_storage()
                await self._clock.sleep(self._storage_pause)

    async def _register(self) -> None:
        started = self._clock.monotonic()
        lease = await self._store.lease(
            LeaseStart(
                ttl_seconds=None if self._config.sole_claimer else self._config.lease_seconds,
                sole=self._config.sole_claimer,
                max_running=self._config.max_running,
            ),
            now=self._clock.now(),
        )
        self._claimer = lease.claimer
        self._lease_deadline = (
            float("inf")
            if self._config.sole_claimer
            else started + self._config.lease_seconds - self._lease_margin()
        )
        self._limit, self._jobs_quota_strikes = lease.budget.limit, lease.budget.strikes

    def _lease_margin(self) -> float:
        return min(1.0, self._config.lease_seconds / 5)

    async def _heartbeat(self) -> None:
        while True:
            await self._clock.sleep(self._config.lease_seconds / 5)
            assert self._claimer is not None
            started = self._clock.monotonic()
            try:
                renewal = LeaseRenew(self._claimer, self._config.lease_seconds)
                renewed = await self._store.lease(renewal, now=self._clock.now())
            except StorageUnavailable:
                continue  # the deadline runs on; sends stop when it passes
            if renewed:
                self._lease_deadline = started + self._config.lease_seconds - self._lease_margin()
                continue
            # Another claimer ended this lease: what it held is theirs now. A new lease;
            # the old claims fail their next fenced write.
            log.warning("pipeline.lease_lost", claimer=self._claimer)
            await self._register()
            self.wake()

    def _check_lease(self, job: ImportJob) -> None:
        """Nothing goes upstream once this claimer's lease may have lapsed, nor for a claim
        taken under an earlier lease (a frozen daemon, resumed, re-registers before its
        import tasks run on: what they held may be another daemon's by now)."""
        if self._clock.monotonic() >= self._lease_deadline:
            raise LeaseLost(f"import {job.import_id}: the lease may have lapsed")
        if job.claim is not None and job.claim.claimer != self._claimer:
            raise LeaseLost(f"import {job.import_id}: claimed under an earlier lease")

    async def _dispatch(self, tg: TaskGroup) -> None:
        if self._claimer is None or self._clock.monotonic() >= self._lease_deadline:
            return
        for claim, not_before in list(self._to_let_go.items()):
            write = StepWrite(Step.LET_GO, not_before=not_before)
            # A claim lost meanwhile (a lease that lapsed in an outage) is someone else's now:
            # nothing is left to let go.
            with contextlib.suppress(LeaseLost):
                await self._store.advance(claim, write, now=self._clock.now())
            del self._to_let_go[claim]
        self._queued_while_full = False
        for job in await self._store.claim_work(self._claimer, now=self._clock.now()):
            self._start(tg, job)

    def _start(self, tg: TaskGroup, job: ImportJob) -> None:
        self._active.add(job.import_id)
        tg.start_soon(self._drive, job, name=f"import {job.import_id}")

    async def _drive(self, job: ImportJob) -> None:
        # Whether its end leaves anything for a dispatch to look at (see below).
        settled = False
        with structlog.contextvars.bound_contextvars(
            importId=job.import_id, ownerExternalId=job.owner_external_id, tokenId=job.token_id
        ):
            try:
                if job.not_before is not None and job.phase != ImportPhase.QUEUED:
                    # Adopted before its next step is due: it waits holding its slot.
                    await self._clock.sleep(
                        max(0.0, (job.not_before - self._clock.now()).total_seconds())
                    )
                await self._advance(job)
            except anyio.get_cancelled_exc_class():
                raise
            except LeaseLost as exc:
                log.warning("import.claim_lost", reason=str(exc))
                if job.claim is not None and job.claim.claimer == self._claimer:
                    # Stopped by this daemon's own deadline, under the lease it still holds:
                    # if the lease is renewed and nobody adopted the import, letting it go
                    # (fenced on the claim) lets the next dispatch take it up again.
                    self._to_let_go[job.claim] = None
            except StorageUnavailable:
                # The store has logged it; the import stays as recorded and resumes later.
                self._pause_for_storage()
                await self._let_go(job, None)
            except Exception:
                # A store or programming error: the import stays as recorded and is resumed by a
                # later dispatch, so nothing is lost; the slot is given back meanwhile.
                log.exception("import.step_failed")
                delay = timedelta(seconds=self._config.retry_max_seconds / 10)
                await self._let_go(job, self._clock.now() + delay)
            else:
                self._storage_pause = 0.0
                # Its slot was handed on when its command ended, in the transaction that claimed
                # the next work: a dispatch now would find nothing that did not wake it anyway.
                settled = job.import_id in self._handed_on
            finally:
                self._handed_on.discard(job.import_id)
                self._handoff_done(job.import_id)
                self._active.discard(job.import_id)
                self._accepted_at.pop(job.import_id, None)
                self._on_change()
                if not settled or self._queued_while_full:
                    self._wake.set()

    async def _let_go(self, job: ImportJob, not_before: datetime | None) -> None:
        if job.claim is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                await self._store.advance(
                    job.claim, StepWrite(Step.LET_GO, not_before=not_before), now=self._clock.now()
                )
        except Exception:
            # Retried at the next dispatch: until then nobody would adopt it.
            self._to_let_go[job.claim] = not_before

    @staticmethod
    def _claim(job: ImportJob) -> Claim:
        assert job.claim is not None, "the pipeline drives claimed imports only"
        return job.claim

    # -- the steps ---------------------------------------------------------------------------

    async def _advance(self, job: ImportJob) -> None:
        while True:
            if job.phase == ImportPhase.QUEUED:
                if job.kind == ImportKind.INITIAL:
                    # A consent's own session: nothing to reuse.
                    step = await self._shielded_default_import(job)
                else:
                    # Shielded: once the access is recorded, the call and the recording of its
                    # answer finish together even during a graceful stop (bounded by the timeout).
                    with anyio.CancelScope(shield=True):
                        step = await self._reuse(job)
            elif job.phase == ImportPhase.REUSING:
                # The reply to a Reuse was lost in a crash: that access is spent and its session
                # unknown. Back to the queue; the quota gate decides when another one may go.
                await self._store.advance(
                    self._claim(job),
                    StepWrite(Step.REQUEUE, not_before=self._clock.now()),
                    now=self._clock.now(),
                )
                return
            elif (
                job.phase == ImportPhase.STARTING
                and job.reply_may_arrive
                and not self._config.sole_claimer
            ):
                # A sole claimer's predecessor is dead (the instance lock): no reply can come.
                fresh = await self._await_late_reply(job)
                if fresh is None:
                    return
                job = fresh
                continue
            elif job.phase == ImportPhase.STARTING:
                try:
                    step = await self._shielded_default_import(job)
                except LeaseLost:
                    # The first Default Import's sender may have stored its command id just
                    # before this second one was to be recorded: poll that command then.
                    fresh = await self._reread(job)
                    if fresh is None or fresh.phase != ImportPhase.POLLING:
                        raise
                    step = fresh
            elif job.phase == ImportPhase.READY:
                step = await self._shielded_default_import(job)
            elif job.phase == ImportPhase.POLLING:
                await self._poll_until_final(job)
                return
            else:
                return
            if isinstance(step, Wait):
                await self._clock.sleep(step.seconds)
                step = step.job
            if step is None:
                return
            job = step

    async def _await_late_reply(self, job: ImportJob) -> ImportJob | None:
        """The claimer that sent this import's Default Import lost its lease, perhaps with the
        reply in flight: give it time to store the command id (it may, claim or not), then go
        on from what the store holds (re-read just before a second Default Import)."""
        log.info("import.awaiting_late_reply", seconds=self._config.reply_grace_seconds)
        await self._clock.sleep(self._config.reply_grace_seconds)
        fresh = await self._reread(job)
        return None if fresh is None else replace(fresh, reply_may_arrive=False)

    async def _reread(self, job: ImportJob) -> ImportJob | None:
        """The import as stored now, None once it ended.

        Raises:
            LeaseLost: another claimer holds it now.
        """
        for found in await self._store.open_jobs():
            if found.import_id == job.import_id:
                if found.claim != job.claim:
                    raise LeaseLost(f"import {job.import_id}: claimed by another meanwhile")
                return found
        return None

    async def _shielded_default_import(self, job: ImportJob) -> ImportJob | Wait | None:
        with anyio.CancelScope(shield=True):
            step = await self._default_import(job)
        return step

    async def _outcome(
        self,
        access: int,
        *,
        outcome: str,
        error_name: str | None = None,
        pressure: str | None = None,
        step: StepAfter | None = None,
        then: AccessStart | None = None,
    ) -> int | None:
        """The one place an upstream access's outcome is recorded (and the shared budget moved
        by it), with the ``step`` its answer leads to in the same transaction; with ``then``
        (after an ``ok`` and a ``step``), the import's next access is begun in that
        transaction too, and its ledger row's id returned."""
        begun = None
        if then is None:
            budget = await self._store.end_access(
                access, outcome=outcome, error_name=error_name, pressure=pressure, step=step
            )
        else:
            assert step is not None, "the next access begins with the step the answer leads to"
            assert (outcome, pressure) == ("ok", None)
            budget, begun = await self._store.end_then_begin_access(access, step=step, then=then)
        self._limit, self._jobs_quota_strikes = budget.limit, budget.strikes
        if pressure == "lower":
            log.warning("upstream.jobs_quota_exceeded", slotLimit=self._limit)
        return begun

    async def _reuse(self, job: ImportJob) -> ImportJob | Wait | None:
        assert job.token_id is not None
        claim = self._claim(job)
        if not job.multiple_access_id:
            await self._fail(job, CommandFailure("TokenUnavailable", "The token is not active."))
            return None
        granted = await self._store.begin_access(
            claim, AccessKind.REUSE, now=self._clock.now(), token_id=job.token_id, quota=self._gate
        )
        self._handoff_done(job.import_id)
        if isinstance(granted, QuotaAnswer):
            await self._not_now(job, granted)
            return None
        access = granted
        self._check_lease(job)
        try:
            session = await self._client.reuse_multiple_access(
                job.multiple_access_id,
                sleep=self._clock.sleep,
                poll_seconds=self._config.poll_min_seconds,
            )
        except RetryLaterError as exc:
            pressure = "lower" if isinstance(exc, JobsQuotaExceededError) else None
            outcome = "error" if exc.sent else "not_sent"
            await self._outcome(access, outcome=outcome, error_name=exc.name, pressure=pressure)
            await self._retry_later(job, exc, phase=ImportPhase.QUEUED)
            return None
        except TokenDeadError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            dead = events.failed(job, CommandFailure(exc.name, exc.message))
            reauth = events.token_reauth_required(job, exc.name)
            await self._end(job, replace(dead, reauth_required=True, token_event=reauth))
            log.warning("refresh.token_dead", error=exc.name)
            return None
        except QuotaError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            now = self._clock.now()
            until = now + timedelta(seconds=self._config.upstream_defer_seconds)
            refused = events.failed(
                job, CommandFailure("MultipleAccessLimitExceeded", ACCESS_LIMIT_MESSAGE)
            )
            deferred = events.quota_deferred(job, until)
            await self._end(job, replace(refused, deferred_until=until, token_event=deferred))
            return None
        except UnexpectedReplyError as exc:
            # Retrying would spend another access on the same answer: the token pauses instead.
            await self._outcome(access, outcome="error", error_name=exc.name)
            failure = CommandFailure(exc.name, exc.message)
            await self._end(job, events.refused(job, failure, gzip.compress(exc.raw)))
            log.error("refresh.unexpected_reply", error=exc.name)
            return None
        except KontomatikError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            if isinstance(exc, UnauthorizedError):
                await self._retry_later(job, exc, phase=ImportPhase.QUEUED)
            else:
                await self._fail(job, CommandFailure(exc.name, exc.message))
            return None
        # The session is written with the access's end, one commit for both (a crash before it
        # leaves the access's outcome unknown, which the quota counts as sent, as it does ok),
        # and the Default Import it is spent on is begun in that same commit.
        write = StepWrite(Step.SESSION, session=session)
        reused = (access, StepAfter(claim, write, self._clock.now()))
        return await self._default_import(
            replace(job, phase=ImportPhase.READY, session=session), reused=reused
        )

    async def _default_import(
        self, job: ImportJob, *, reused: tuple[int, StepAfter] | None = None
    ) -> ImportJob | Wait | None:
        """Send the import's Default Import, its access recorded first; ``reused``: the Reuse
        access whose answer (the session, the step) is recorded in the same transaction."""
        session = job.session
        assert session is not None, "an import in phase ready/starting has a session"
        claim = self._claim(job)
        resolving = job.phase == ImportPhase.STARTING
        stay = job.phase if job.phase != ImportPhase.QUEUED else ImportPhase.READY
        event = events.import_started(job) if job.default_import_attempts == 0 else None
        if reused is None:
            begun = await self._store.begin_access(
                claim,
                AccessKind.DEFAULT_IMPORT,
                now=self._clock.now(),
                token_id=job.token_id,
                session_id=session.session_id,
                event=event,
            )
            assert isinstance(begun, int)
            access = begun
        else:
            reuse, step = reused
            start = AccessStart(
                AccessKind.DEFAULT_IMPORT, job.token_id, session.session_id, event, step.now
            )
            ended_then_begun = await self._outcome(reuse, outcome="ok", step=step, then=start)
            assert ended_then_begun is not None
            access = ended_then_begun
        # What is left of a handoff (the request) does not need the writer.
        self._handoff_done(job.import_id)
        # Recorded as sent: the import now stands in phase starting.
        job = replace(
            job,
            phase=ImportPhase.STARTING,
            default_import_attempts=job.default_import_attempts + 1,
        )
        self._check_lease(job)
        try:
            command = await self._client.default_import(session, job.since)
            # The command runs from here: polls are timed from this moment, not from after the
            # writes below, which may wait behind other imports' results.
            self._accepted_at[job.import_id] = (self._clock.monotonic(), command.target)
        except JobsQuotaExceededError as exc:
            # Refused before it started: the session is still unused (or as unknown as before).
            await self._outcome(access, outcome="error", error_name=exc.name, pressure="lower")
            phase = ImportPhase.STARTING if resolving else stay
            return await self._wait_in_slot(
                job, jobs_quota_delay(self._jobs_quota_strikes - 1, self._rng), phase
            )
        except RetryLaterError as exc:
            await self._outcome(
                access, outcome="error" if exc.sent else "not_sent", error_name=exc.name
            )
            # Sent but unanswered: it may have started upstream. The next try resolves it.
            phase = ImportPhase.STARTING if (exc.sent or resolving) else stay
            delay = backoff(
                job.attempts,
                base=self._config.retry_base_seconds,
                cap=self._config.retry_max_seconds,
                rng=self._rng,
            )
            log.info("import.retry_later", error=exc.name, retryInSeconds=round(delay, 1))
            return await self._wait_in_slot(job, delay, phase)
        except SessionDeadError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            if resolving:
                # The unanswered first call used the session up: its command id is lost.
                failure = CommandFailure(
                    LOST_IMPORT,
                    "The Default Import's reply was lost and the session allows no second one "
                    f"(upstream: {exc.name}).",
                )
            else:
                failure = CommandFailure(exc.name, exc.message)
            await self._fail(job, failure)
            return None
        except UnauthorizedError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            log.error("upstream.unauthorized", hint="check AISD_API_KEY and the IP whitelist")
            phase = ImportPhase.STARTING if resolving else stay
            return await self._wait_in_slot(job, self._config.retry_max_seconds, phase)
        except KontomatikError as exc:
            await self._outcome(access, outcome="error", error_name=exc.name)
            await self._fail(job, CommandFailure(exc.name, exc.message))
            return None
        now = self._clock.now()
        delay = poll_delay(
            0.0,
            self._estimates.expected(command.target),
            min_seconds=self._config.poll_min_seconds,
            max_seconds=self._config.poll_max_seconds,
        )
        # The command id first: only this process knows it, and the session allows no second
        # Default Import to find it again. The access's end (and the budget's raise) is
        # written with it.
        await self._store_command(
            job,
            StepWrite(
                Step.COMMAND,
                command_id=command.id,
                not_before=now + timedelta(seconds=delay),
                owner_echo=command.owner_external_id,
                access=access,
            ),
        )
        log.info("import.command_started", commandId=command.id)
        return replace(
            job,
            phase=ImportPhase.POLLING,
            command_id=command.id,
            started_at=job.started_at or now,
            last_poll_at=now,
        )

    async def _store_command(self, job: ImportJob, write: StepWrite) -> None:
        """Store the command id a Default Import returned with its access's end (``ok``, the
        budget raised), retrying with the storage back-off while the database refuses it
        (given up only on a graceful stop). The store takes it
        from the sender even after its claim lapsed while nobody moved the import on; if
        another claimer holds the import now, that one polls the command and this one's next
        lease check gives the import up.

        Raises:
            LeaseLost: the import moved on (resolved by a second Default Import, or ended)
                before the command id could be stored.
        """
        assert write.access is not None
        while True:
            try:
                step = StepAfter(self._claim(job), write, self._clock.now())
                await self._outcome(write.access, outcome="ok", pressure="raise", step=step)
                return
            except StorageUnavailable:
                if not self._accepting:
                    log.error("import.command_not_stored", commandId=write.command_id)
                    raise
                self._pause_for_storage()
                await self._clock.sleep(self._storage_pause)
            except LeaseLost:
                # Only after a freeze longer than the adopters' grace: the import was resolved
                # (or ended) without this command, which runs on upstream unpolled.
                log.error("import.command_arrived_late", commandId=write.command_id)
                raise

    async def _poll_until_final(self, job: ImportJob) -> None:
        assert job.command_id is not None
        cfg = self._config
        # Elapsed time is measured from the Default Import (the reference the spacing rule
        # counts from); after a restart, from the last recorded request.
        accepted = self._accepted_at.pop(job.import_id, None)
        # The bank, when the Default Import's reply named it already.
        target: str | None = None
        if accepted is not None:
            t0, target = accepted
        else:
            # Resumed after a restart: count from the last recorded request.
            reference = job.last_poll_at or job.started_at or self._clock.now()
            elapsed = max(0.0, (self._clock.now() - reference).total_seconds())
            t0 = self._clock.monotonic() - elapsed
        last_request = t0
        # This command's aim, taken once its bank is known (the bank's own bracket decides
        # whether the aim was right); before that, the quickest bank's serves.
        plan: Aim | None = None
        aimed_hit: bool | None = None
        running_at: float | None = None

        def current_aim() -> Aim | None:
            nonlocal plan
            if plan is None and target is not None:
                plan = self._estimates.aim(target)
            return plan if plan is not None else self._estimates.aim(None)

        # With nothing known, the first poll's phase in the band (see discovery_phase).
        first_aim = current_aim()
        phase = self._estimates.next_phase() if first_aim is None else 0.0

        polls = job.polls
        first_error_at: float | None = None
        # The slot's hand-over, begun as soon as a reply shows the command ended.
        release: _Release | None = None

        def on_final(state: CommandState) -> None:
            nonlocal release
            if release is None:
                release = self._begin_release(job)

        with structlog.contextvars.bound_contextvars(commandId=job.command_id):
            while True:
                since_last = self._clock.monotonic() - last_request
                aim = current_aim()
                delay = poll_delay(
                    last_request - t0,
                    None if aim is None else aim.at,
                    min_seconds=cfg.poll_min_seconds,
                    max_seconds=cfg.poll_max_seconds,
                    phase=phase,
                )
                await self._clock.sleep(max(0.0, delay - since_last))
                # A poll is a request too: none once the lease may have passed to another.
                self._check_lease(job)
                last_request = self._clock.monotonic()
                elapsed = last_request - t0
                try:
                    reply = await self._client.get_import_result(
                        job.command_id, on_final=on_final, pace=self._after_handoffs
                    )
                except RetryLaterError as exc:
                    # A reply cut after its final state: the command did end, and its slot is
                    # handed on once; polling goes on for the result.
                    await _released(release)
                    first_error_at = first_error_at or last_request
                    if last_request - first_error_at > POLL_DEADLINE_SECONDS:
                        await self._fail(job, CommandFailure(exc.name, exc.message), polls=polls)
                        return
                    log.info("import.poll_retry", error=exc.name)
                    continue
                except KontomatikError as exc:
                    await _released(release)
                    await self._fail(job, CommandFailure(exc.name, exc.message), polls=polls)
                    return
                first_error_at = None
                polls += 1
                command = reply.command
                target = command.target or target
                if plan is not None and aimed_hit is None:
                    if running_at is not None and running_at >= plan.at:
                        # A poll placed before the bank was known already passed the aim.
                        aimed_hit = False
                    elif elapsed >= plan.at - AIM_TOLERANCE_SECONDS:
                        aimed_hit = command.state.is_final
                if not command.state.is_final:
                    running_at = elapsed
                    now = self._clock.now()
                    aim = current_aim()
                    nxt = poll_delay(
                        elapsed,
                        None if aim is None else aim.at,
                        min_seconds=cfg.poll_min_seconds,
                        max_seconds=cfg.poll_max_seconds,
                    )
                    await self._store.advance(
                        self._claim(job),
                        StepWrite(Step.POLL, not_before=now + timedelta(seconds=nxt)),
                        now=now,
                    )
                    continue
                self._on_command_end(elapsed, running_at, self._estimates.expected(target))
                self._estimates.observe(
                    target,
                    aim=plan if aimed_hit is not None else None,
                    hit=aimed_hit,
                    finished_at=elapsed,
                    running_at=running_at,
                )
                if release is None:
                    release = self._begin_release(job)
                await _released(release)
                await self._finish(job, command, reply.raw, polls)
                return

    async def _finish(
        self, job: ImportJob, command: Command, raw: bytes | None, polls: int
    ) -> None:
        if command.state == CommandState.SUCCESSFUL and command.result is not None:
            await self._after_handoffs()
            if await self._refused_owner(job, command.owner_external_id, raw, polls):
                log.error("import.owner_mismatch", hint="give the widget the same ownerExternalId")
                return
            for skipped in command.result.skipped[:MAX_SKIPPED_LOGGED]:
                # Where and why, never the value: the element stays in the kept raw reply.
                log.warning("import.element_skipped", path=skipped.path, reason=skipped.reason)
            async with self._storing:
                await self._after_handoffs()
                now = self._clock.now()
                success = Succeed(
                    command.result,
                    raw_reply=raw,
                    coverage_start=job.since,
                    polls=polls,
                    event=events.import_succeeded(job, command.result, polls=polls, now=now),
                )
                stats = await self._store.advance(self._claim(job), success, now=now)
            log.info(
                "import.stored",
                accounts=stats.accounts,
                transactions=stats.transactions,
                added=stats.added,
                modified=stats.modified,
                removed=stats.removed,
            )
            return
        failure = command.failure or CommandFailure(
            f"Command{command.state.value.title()}", f"The command ended in state {command.state}."
        )
        await self._fail(job, failure, polls=polls)

    # -- helpers -----------------------------------------------------------------------------

    async def _end(self, job: ImportJob, write: Fail) -> None:
        await self._store.advance(self._claim(job), write, now=self._clock.now())

    async def _fail(
        self, job: ImportJob, failure: CommandFailure, *, polls: int | None = None
    ) -> None:
        await self._end(job, events.failed(job, failure, polls))

    async def _refused_owner(
        self, job: ImportJob, echo: str | None, raw: bytes | None, polls: int
    ) -> bool:
        """Refuse a successful result that Kontomatik filed under another owner than the
        consent's (:func:`aisd.merge.owner_mismatch`) before anything is merged. One read: an
        import of the right owner costs no write of its own before its result is stored."""
        found = await self._store.imports(ImportQuery(import_id=job.import_id))
        if not found:
            return False
        record = found[0]
        echo = echo or record.owner_echo
        if not owner_mismatch(record.owner_external_id, echo, record.token_echo):
            return False
        failure = events.owner_mismatch_failure()
        await self._end(job, events.refused(job, failure, raw, polls=polls, owner_echo=echo))
        return True

    async def _not_now(self, job: ImportJob, answer: QuotaAnswer) -> None:
        if answer.retry_at is None:
            await self._fail(
                job,
                CommandFailure("RefreshNotPossible", "The token allows no refresh before it ends."),
            )
            return
        await self._store.advance(
            self._claim(job),
            StepWrite(Step.REQUEUE, not_before=answer.retry_at),
            now=self._clock.now(),
        )

    async def _retry_later(
        self, job: ImportJob, exc: KontomatikError, *, phase: ImportPhase
    ) -> None:
        assert phase == ImportPhase.QUEUED
        delay = backoff(
            job.attempts,
            base=self._config.retry_base_seconds,
            cap=self._config.retry_max_seconds,
            rng=self._rng,
        )
        log.info("import.retry_later", error=exc.name, retryInSeconds=round(delay, 1))
        now = self._clock.now()
        await self._store.advance(
            self._claim(job),
            StepWrite(
                Step.REQUEUE,
                not_before=now + timedelta(seconds=delay),
                attempts=job.attempts + 1,
            ),
            now=now,
        )

    async def _wait_in_slot(self, job: ImportJob, delay: float, phase: ImportPhase) -> Wait:
        """Record the deferral (so a restart honours it); the caller then waits holding the slot.
        ``phase`` ready means the Default Import provably never started."""
        now = self._clock.now()
        step = Step.NOT_STARTED if phase == ImportPhase.READY else Step.WAIT
        await self._store.advance(
            self._claim(job),
            StepWrite(step, not_before=now + timedelta(seconds=delay), attempts=job.attempts + 1),
            now=now,
        )
        return Wait(delay, replace(job, phase=phase, attempts=job.attempts + 1))

    def _pause_for_storage(self) -> None:
        now = self._clock.monotonic()
        if now < self._paused_until:
            return  # another import hit the same failure during this pause
        self._storage_pause = min(
            STORAGE_PAUSE_MAX_SECONDS, max(STORAGE_PAUSE_SECONDS, 2 * self._storage_pause)
        )
        self._paused_until = now + self._storage_pause
        log.info("pipeline.paused", reason="storage", seconds=self._storage_pause)

    def _begin_release(self, job: ImportJob) -> _Release:
        """Hand the ended command's slot on in a task of its own: it runs while the rest of the
        final reply is still read and parsed. The handoff counts as pending until the next
        import's first write is done (see :meth:`_after_handoffs`)."""
        assert self._tg is not None, "imports are driven inside run()"
        release = _Release()
        self._handoffs.add(job.import_id)

        async def hand_over() -> None:
            try:
                await self._release_slot(job)
            except Exception as exc:  # raised again in the import's own task
                release.error = exc
            finally:
                self._handoff_done(job.import_id)
                release.done.set()

        self._tg.start_soon(hand_over, name=f"release {job.import_id}")
        return release

    async def _release_slot(self, job: ImportJob) -> None:
        """The command has ended upstream: its slot serves the next import while this one's
        result is stored (which takes a while for a year of transactions)."""
        handed = await self._store.advance(
            self._claim(job), StepWrite(Step.ENDED_UPSTREAM), now=self._clock.now()
        )
        self._handed_on.add(job.import_id)
        self._active.discard(job.import_id)
        assert self._tg is not None
        for other in handed:
            if _sends_at_once(other):
                self._handoffs.add(other.import_id)
            self._start(self._tg, other)

    def _handoff_done(self, import_id: str) -> None:
        if import_id in self._handoffs:
            self._handoffs.discard(import_id)
            self._handoffs_changed.set()
            self._handoffs_changed = anyio.Event()

    async def _after_handoffs(self) -> None:
        """Wait for the handoffs pending now. Their short writes go before a large result's,
        which would otherwise hold the writer while a freed slot waits for its next command;
        and before a large reply's parsing, which would hold the CPU (and so the writer's
        thread, which needs the GIL between statements). Handoffs begun meanwhile do not extend
        the wait, so storing and parsing are never starved."""
        pending = set(self._handoffs)
        while pending & self._handoffs:
            await self._handoffs_changed.wait()
