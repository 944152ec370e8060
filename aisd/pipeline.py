"""The import pipeline: drives every import from the queue to a final state.

At most ``max_running`` imports hold a *slot* at once; a slot stands for one command running
upstream (a Reuse Multiple Access in flight or a Default Import not yet finished), so the budget
is shared by every kind of command. Each step is written to the store before the call it
describes is sent, so a restart resumes exactly where the previous process stood: a command
that was running is polled again, never started again.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

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
from aisd.polling import DurationEstimates, backoff, jobs_quota_delay, poll_delay
from aisd.settings import Settings
from aisd.store import (
    AccessKind,
    ImportJob,
    ImportKind,
    ImportPhase,
    StorageUnavailable,
    Store,
)

log = structlog.get_logger("aisd.pipeline")

# After a Default Import whose reply was lost, the provider's answer to a second one tells us
# what happened: it started (DefaultImportAlreadyExecuted) and its command id is lost with it.
LOST_IMPORT = "DefaultImportLost"
# How long to keep polling a command whose polls keep failing transiently before giving up.
POLL_DEADLINE_SECONDS = 1800.0
# After the database refuses a write (disk full, read-only), dispatching pauses this long,
# doubling while the retries keep failing: every import would fail alike, so no spinning.
STORAGE_PAUSE_SECONDS = 1.0
STORAGE_PAUSE_MAX_SECONDS = 30.0
# Unreadable elements of one reply logged one by one at most (all are counted in the event).
MAX_SKIPPED_LOGGED = 100


@dataclass(frozen=True, slots=True)
class GateAnswer:
    """The quota gate's word on one Reuse: send now (recorded at ``at``), later, or never."""

    allowed: bool
    at: datetime
    retry_at: datetime | None = None


class ReuseGate(Protocol):
    """Asked before every Reuse Multiple Access, under its lock, which is held until the
    access is in the ledger: two tokens sharing an account never both take the last room."""

    quota_lock: anyio.Lock

    async def gate(self, job: ImportJob, now: datetime) -> GateAnswer:
        """Whether the Reuse of ``job`` may be sent now."""
        ...


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

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        """The knobs the settings set; the rest keep their defaults."""
        return cls(
            max_running=settings.max_running_commands,
            poll_min_seconds=settings.poll_min_seconds,
            poll_max_seconds=settings.poll_max_seconds,
            upstream_defer_seconds=86400 / settings.refreshes_per_day,
        )


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
        self._active: set[str] = set()
        # Imports whose command has ended upstream and whose result is being stored: they hold
        # no slot, but must not be driven twice.
        self._finishing: set[str] = set()
        # When each running command's Default Import was answered (monotonic clock).
        self._accepted_at: dict[str, float] = {}
        # Results are stored one at a time: the store's writer serves its callers in order, and
        # a queue of large results would hold back the short writes that start the next imports.
        self._storing = anyio.Lock()
        self._wake = anyio.Event()
        self._accepting = True
        self._estimates = DurationEstimates()
        # Lowered after JobsQuotaExceeded (someone else holds upstream slots), then raised again
        # by one per successful start: additive increase, multiplicative decrease.
        self._limit = config.max_running
        self._jobs_quota_strikes = 0
        self.last_dispatch_at: float = clock.monotonic()
        self._storage_pause = 0.0
        self._paused_until = 0.0

    # -- observation -------------------------------------------------------------------------

    @property
    def running_commands(self) -> int:
        """Imports holding a slot right now."""
        return len(self._active)

    @property
    def limit(self) -> int:
        """The current slot budget (below the setting while upstream pushes back)."""
        return self._limit

    # -- control -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the queue now (after a submit, a planner tick, a finished import)."""
        self._wake.set()

    def stop_accepting(self) -> None:
        """Start no new command (graceful stop); in-flight ones stay recorded for the next start."""
        self._accepting = False
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled. Resumes every in-flight import first."""
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                self.last_dispatch_at = self._clock.monotonic()
                if self._accepting and self._clock.monotonic() >= self._paused_until:
                    await self._dispatch(tg)
                with anyio.move_on_after(self._config.idle_recheck_seconds):
                    await self._wake.wait()
                self._wake = anyio.Event()

    async def _dispatch(self, tg: TaskGroup) -> None:
        now = self._clock.now()
        # In-flight imports first: they already hold a command upstream (or are about to).
        for job in await self._store.in_flight():
            if job.import_id in self._active or job.import_id in self._finishing:
                continue
            if job.not_before is not None and job.not_before > now:
                continue
            self._start(tg, job)
        free = self._limit - len(self._active)
        if free <= 0:
            return
        for job in await self._store.next_queued(now=now, limit=free + len(self._active)):
            if free <= 0:
                break
            if job.import_id in self._active or job.import_id in self._finishing:
                continue
            self._start(tg, job)
            free -= 1

    def _start(self, tg: TaskGroup, job: ImportJob) -> None:
        self._active.add(job.import_id)
        tg.start_soon(self._drive, job, name=f"import {job.import_id}")

    async def _drive(self, job: ImportJob) -> None:
        with structlog.contextvars.bound_contextvars(
            importId=job.import_id, ownerExternalId=job.owner_external_id, tokenId=job.token_id
        ):
            try:
                await self._advance(job)
            except anyio.get_cancelled_exc_class():
                raise
            except StorageUnavailable:
                # The store has logged it; the import stays as recorded and resumes later.
                self._pause_for_storage()
            except Exception:
                # A store or programming error: the import stays as recorded and is resumed by a
                # later dispatch, so nothing is lost; the slot is given back meanwhile.
                log.exception("import.step_failed")
                with contextlib.suppress(Exception):
                    await self._store.defer(
                        job.import_id,
                        not_before=self._clock.now()
                        + timedelta(seconds=self._config.retry_max_seconds / 10),
                        attempts=job.attempts + 1,
                    )
            else:
                self._storage_pause = 0.0
            finally:
                self._active.discard(job.import_id)
                self._finishing.discard(job.import_id)
                self._accepted_at.pop(job.import_id, None)
                self._on_change()
                self._wake.set()

    # -- the steps ---------------------------------------------------------------------------

    async def _advance(self, job: ImportJob) -> None:
        while True:
            if job.phase == ImportPhase.QUEUED:
                if job.kind == ImportKind.INITIAL:
                    # A consent's own session: nothing to reuse.
                    job = replace(job, phase=ImportPhase.READY)
                    continue
                # Shielded: once the access is recorded, the call and the recording of its
                # answer finish together even during a graceful stop (bounded by the timeout).
                with anyio.CancelScope(shield=True):
                    next_job = await self._reuse(job)
            elif job.phase == ImportPhase.REUSING:
                # The reply to a Reuse was lost in a crash: that access is spent and its session
                # unknown. Back to the queue; the quota gate decides when another one may go.
                await self._store.defer(
                    job.import_id,
                    not_before=self._clock.now(),
                    attempts=job.attempts,
                    phase=ImportPhase.QUEUED,
                )
                return
            elif job.phase in (ImportPhase.READY, ImportPhase.STARTING):
                with anyio.CancelScope(shield=True):
                    step = await self._default_import(job)
                if isinstance(step, Wait):
                    await self._clock.sleep(step.seconds)
                    next_job = step.job
                else:
                    next_job = step
            elif job.phase == ImportPhase.POLLING:
                await self._poll_until_final(job)
                return
            else:
                return
            if next_job is None:
                return
            job = next_job

    async def _reuse(self, job: ImportJob) -> ImportJob | None:
        assert job.token_id is not None
        if not job.multiple_access_id:
            await self._fail(job, CommandFailure("TokenUnavailable", "The token is not active."))
            return None
        if self._gate is None:
            access = await self._store.record_access(
                AccessKind.REUSE,
                now=self._clock.now(),
                token_id=job.token_id,
                import_id=job.import_id,
            )
        else:
            async with self._gate.quota_lock:
                answer = await self._gate.gate(job, self._clock.now())
                if not answer.allowed:
                    await self._not_now(job, answer)
                    return None
                access = await self._store.record_access(
                    AccessKind.REUSE, now=answer.at, token_id=job.token_id, import_id=job.import_id
                )
        try:
            session = await self._client.reuse_multiple_access(
                job.multiple_access_id,
                sleep=self._clock.sleep,
                poll_seconds=self._config.poll_min_seconds,
            )
        except RetryLaterError as exc:
            await self._store.record_access_outcome(
                access, outcome="error" if exc.sent else "not_sent", error_name=exc.name
            )
            if isinstance(exc, JobsQuotaExceededError):
                self._lower_pressure()
            await self._retry_later(job, exc, phase=ImportPhase.QUEUED)
            return None
        except TokenDeadError as exc:
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            await self._store.token_reauth_required(
                job.token_id,
                job.import_id,
                CommandFailure(exc.name, exc.message),
                now=self._clock.now(),
            )
            log.warning("refresh.token_dead", error=exc.name)
            return None
        except QuotaError as exc:
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            now = self._clock.now()
            await self._store.upstream_quota_exceeded(
                job.token_id,
                job.import_id,
                now=now,
                deferred_until=now + timedelta(seconds=self._config.upstream_defer_seconds),
            )
            return None
        except UnexpectedReplyError as exc:
            # Retrying would spend another access on the same answer: the token pauses instead.
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            await self._store.refuse_reuse_reply(
                job.import_id,
                CommandFailure(exc.name, exc.message),
                raw_reply=exc.raw,
                now=self._clock.now(),
            )
            log.error("refresh.unexpected_reply", error=exc.name)
            return None
        except KontomatikError as exc:
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            if isinstance(exc, UnauthorizedError):
                await self._retry_later(job, exc, phase=ImportPhase.QUEUED)
            else:
                await self._fail(job, CommandFailure(exc.name, exc.message))
            return None
        await self._store.record_access_outcome(access, outcome="ok")
        await self._store.record_session(job.import_id, session, now=self._clock.now())
        return replace(job, phase=ImportPhase.READY, session=session)

    async def _default_import(self, job: ImportJob) -> ImportJob | Wait | None:
        assert job.session is not None, "an import in phase ready/starting has a session"
        resolving = job.phase == ImportPhase.STARTING
        access = await self._store.record_access(
            AccessKind.DEFAULT_IMPORT,
            now=self._clock.now(),
            token_id=job.token_id,
            import_id=job.import_id,
            session_id=job.session.session_id,
        )
        try:
            command = await self._client.default_import(job.session, job.since)
            # The command runs from here: polls are timed from this moment, not from after the
            # writes below, which may wait behind other imports' results.
            self._accepted_at[job.import_id] = self._clock.monotonic()
        except JobsQuotaExceededError as exc:
            # Refused before it started: the session is still unused (or as unknown as before).
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            self._lower_pressure()
            phase = ImportPhase.STARTING if resolving else ImportPhase.READY
            return await self._wait_in_slot(
                job, jobs_quota_delay(self._jobs_quota_strikes - 1, self._rng), phase
            )
        except RetryLaterError as exc:
            await self._store.record_access_outcome(
                access, outcome="error" if exc.sent else "not_sent", error_name=exc.name
            )
            # Sent but unanswered: it may have started upstream. The next try resolves it.
            phase = ImportPhase.STARTING if (exc.sent or resolving) else ImportPhase.READY
            delay = backoff(
                job.attempts,
                base=self._config.retry_base_seconds,
                cap=self._config.retry_max_seconds,
                rng=self._rng,
            )
            log.info("import.retry_later", error=exc.name, retryInSeconds=round(delay, 1))
            return await self._wait_in_slot(job, delay, phase)
        except SessionDeadError as exc:
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
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
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            log.error("upstream.unauthorized", hint="check AISD_API_KEY and the IP whitelist")
            phase = ImportPhase.STARTING if resolving else ImportPhase.READY
            return await self._wait_in_slot(job, self._config.retry_max_seconds, phase)
        except KontomatikError as exc:
            await self._store.record_access_outcome(access, outcome="error", error_name=exc.name)
            await self._fail(job, CommandFailure(exc.name, exc.message))
            return None
        await self._store.record_access_outcome(access, outcome="ok")
        self._raise_pressure()
        now = self._clock.now()
        delay = poll_delay(
            0.0,
            self._estimates.expected(command.target),
            min_seconds=self._config.poll_min_seconds,
            max_seconds=self._config.poll_max_seconds,
        )
        await self._store.record_command(
            job.import_id,
            command.id,
            now=now,
            next_poll_at=now + timedelta(seconds=delay),
            owner_echo=command.owner_external_id,
        )
        log.info("import.command_started", commandId=command.id)
        return replace(
            job,
            phase=ImportPhase.POLLING,
            command_id=command.id,
            started_at=job.started_at or now,
            last_poll_at=now,
        )

    async def _poll_until_final(self, job: ImportJob) -> None:
        assert job.command_id is not None
        cfg = self._config
        # Elapsed time is measured from the Default Import (the reference the spacing rule
        # counts from); after a restart, from the last recorded request.
        accepted = self._accepted_at.pop(job.import_id, None)
        if accepted is not None:
            t0 = accepted
        else:
            # Resumed after a restart: count from the last recorded request.
            reference = job.last_poll_at or job.started_at or self._clock.now()
            elapsed = max(0.0, (self._clock.now() - reference).total_seconds())
            t0 = self._clock.monotonic() - elapsed
        last_request = t0
        target: str | None = None
        aimed_hit: bool | None = None
        aimed_at: float | None = None
        running_at: float | None = None
        polls = job.polls
        first_error_at: float | None = None
        with structlog.contextvars.bound_contextvars(commandId=job.command_id):
            while True:
                since_last = self._clock.monotonic() - last_request
                expected = self._estimates.expected(target)
                # Only an estimate of this command's own bank says whether the aim was right.
                aim = expected if target is not None else None
                delay = poll_delay(
                    last_request - t0,
                    expected,
                    min_seconds=cfg.poll_min_seconds,
                    max_seconds=cfg.poll_max_seconds,
                )
                await self._clock.sleep(max(0.0, delay - since_last))
                last_request = self._clock.monotonic()
                elapsed = last_request - t0
                try:
                    reply = await self._client.get_import_result(job.command_id)
                except RetryLaterError as exc:
                    first_error_at = first_error_at or last_request
                    if last_request - first_error_at > POLL_DEADLINE_SECONDS:
                        await self._fail(job, CommandFailure(exc.name, exc.message), polls=polls)
                        return
                    log.info("import.poll_retry", error=exc.name)
                    continue
                except KontomatikError as exc:
                    await self._fail(job, CommandFailure(exc.name, exc.message), polls=polls)
                    return
                first_error_at = None
                polls += 1
                command = reply.command
                target = command.target or target
                if aim is not None and aimed_hit is None:
                    if running_at is not None and running_at >= aim:
                        # A poll placed before the bank was known already passed the aim.
                        aimed_hit, aimed_at = False, aim
                    elif elapsed >= aim:
                        aimed_hit, aimed_at = command.state.is_final, aim
                if not command.state.is_final:
                    running_at = elapsed
                    now = self._clock.now()
                    nxt = poll_delay(
                        elapsed,
                        self._estimates.expected(target),
                        min_seconds=cfg.poll_min_seconds,
                        max_seconds=cfg.poll_max_seconds,
                    )
                    await self._store.record_poll(
                        job.import_id, now=now, next_poll_at=now + timedelta(seconds=nxt)
                    )
                    continue
                self._on_command_end(elapsed, running_at, expected)
                self._estimates.observe(
                    target,
                    aimed_hit=aimed_hit,
                    finished_at=elapsed,
                    aimed_at=aimed_at,
                    running_at=running_at,
                )
                self._release_slot(job.import_id)
                await self._finish(job, command, reply.raw, polls)
                return

    async def _finish(
        self, job: ImportJob, command: Command, raw: bytes | None, polls: int
    ) -> None:
        if command.state == CommandState.SUCCESSFUL and command.result is not None:
            refused = await self._store.refuse_foreign_owner(
                job.import_id,
                command.owner_external_id,
                raw_reply=raw,
                now=self._clock.now(),
                polls=polls,
            )
            if refused:
                log.error("import.owner_mismatch", hint="give the widget the same ownerExternalId")
                return
            for skipped in command.result.skipped[:MAX_SKIPPED_LOGGED]:
                # Where and why, never the value: the element stays in the kept raw reply.
                log.warning("import.element_skipped", path=skipped.path, reason=skipped.reason)
            async with self._storing:
                stats = await self._store.finish_success(
                    job.import_id,
                    command.result,
                    now=self._clock.now(),
                    raw_reply=raw,
                    coverage_start=job.since,
                    polls=polls,
                )
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

    async def _fail(
        self, job: ImportJob, failure: CommandFailure, *, polls: int | None = None
    ) -> None:
        await self._store.finish_failure(job.import_id, failure, now=self._clock.now(), polls=polls)

    async def _not_now(self, job: ImportJob, answer: GateAnswer) -> None:
        if answer.retry_at is None:
            await self._fail(
                job,
                CommandFailure("RefreshNotPossible", "The token allows no refresh before it ends."),
            )
            return
        await self._store.defer(
            job.import_id,
            not_before=answer.retry_at,
            attempts=job.attempts,
            phase=ImportPhase.QUEUED,
        )

    async def _retry_later(
        self, job: ImportJob, exc: KontomatikError, *, phase: ImportPhase
    ) -> None:
        delay = backoff(
            job.attempts,
            base=self._config.retry_base_seconds,
            cap=self._config.retry_max_seconds,
            rng=self._rng,
        )
        log.info("import.retry_later", error=exc.name, retryInSeconds=round(delay, 1))
        await self._store.defer(
            job.import_id,
            not_before=self._clock.now() + timedelta(seconds=delay),
            attempts=job.attempts + 1,
            phase=phase,
        )

    async def _wait_in_slot(self, job: ImportJob, delay: float, phase: ImportPhase) -> Wait:
        """Record the deferral (so a restart honours it); the caller then waits holding the slot."""
        await self._store.defer(
            job.import_id,
            not_before=self._clock.now() + timedelta(seconds=delay),
            attempts=job.attempts + 1,
            phase=phase,
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

    def _release_slot(self, import_id: str) -> None:
        """The command has ended upstream: its slot serves the next import while this one's
        result is stored (which takes a while for a year of transactions)."""
        self._finishing.add(import_id)
        self._active.discard(import_id)
        self._wake.set()

    def _lower_pressure(self) -> None:
        self._jobs_quota_strikes += 1
        self._limit = max(1, min(self._limit, len(self._active)) - 1)
        log.warning("upstream.jobs_quota_exceeded", slotLimit=self._limit)

    def _raise_pressure(self) -> None:
        self._jobs_quota_strikes = 0
        if self._limit < self._config.max_running:
            self._limit += 1
