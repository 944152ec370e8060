"""Pure timing rules of the import pipeline: poll spacing, learned command durations, back-off.

Kontomatik asks for Get Import Result every 2-5 s. Within that band, the pipeline places one poll
of each command (the *aimed* poll) just after the moment the command is expected to end, so a
slot is handed back as soon as the command is done. A poll that lands early costs a whole spacing
(>= 2 s) more; one that lands late costs only its lateness. So the aim is learned per bank
(target) as a bracket of the end: ``safe``, an elapsed time at which polls find the command
finished, and ``floor``, one at which they find it still running. Most commands aim just after
``safe``; one in ``PROBE_EVERY`` probes the middle of the bracket, so only that one pays for a
probe that lands early, and the bracket halves with every probe until it is narrower than
``RESOLUTION_SECONDS``. A miss of a normal aim (the bank got slower) raises ``safe`` by a step
that doubles while misses go on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

# Normal aims land this long after ``safe``: a hair of jitter (the Default Import's reply time,
# the event loop's latency) must not turn a hit into a miss.
AIM_MARGIN_SECONDS = 0.08
# Probing stops once the end is bracketed this tightly: a probe that lands early costs its
# command a whole spacing (and, in a drained backlog, leaves its slot a step behind the others),
# more than a few tenths of a second of lateness cost until the bracket reopens.
RESOLUTION_SECONDS = 0.3
# One command in this many probes the bracket (commands of a batch share one aim otherwise).
PROBE_EVERY = 8
# Every normal hit lowers ``floor`` this much, so the bracket slowly reopens and probing resumes
# now and then (after a few hundred commands of a bank): a bank that got quicker is noticed.
FLOOR_DECAY_SECONDS = 0.0005
# A normal aim that missed raises ``safe`` by this, doubling with each further miss.
MISS_STEP_SECONDS = 0.25
MISS_STEP_MAX_SECONDS = 4.0


_SLOP = 1e-9


def poll_delay(
    elapsed: float,
    aim: float | None,
    *,
    min_seconds: float,
    max_seconds: float,
    phase: float = 0.0,
) -> float:
    """Seconds to wait before the next Get Import Result.

    Args:
        elapsed: seconds since the Default Import (or the previous poll's reference point) at the
            moment of the previous request: the next poll happens at ``elapsed + delay``.
        aim: the elapsed time some poll should land on (see :meth:`DurationEstimates.aim`), or
            None when nothing is known yet.
        min_seconds: the closest two polls may be (the Default Import counts as a request).
        max_seconds: the furthest apart two polls may be.
        phase: in ``[0, 1)``, for a first poll with no aim: how far into the band the first
            poll lands (see :func:`discovery_phase`); later polls with no aim come at the minimum.

    Returns:
        A delay within ``[min_seconds, max_seconds]``, chosen so that, when the aim lies ahead,
        some poll lands on it whenever any sequence of allowed steps can.
    """
    if aim is None:
        if elapsed > 0:
            return min_seconds
        return min_seconds + phase * min(min_seconds, max_seconds - min_seconds)
    remaining = aim - elapsed
    if remaining <= min_seconds:
        return min_seconds
    # Split what is left into the fewest equal steps that fit: the last one lands on the aim
    # whenever any sequence of allowed steps can.
    # A nanosecond of float rounding (an aim a hair past a whole number of maximal steps) must
    # not cost a whole extra step and a poll that misses the aim.
    steps = max(1, math.ceil(remaining / max_seconds - _SLOP))
    return max(min_seconds, min(max_seconds, remaining / steps))


def discovery_phase(n: int) -> float:
    """The first-poll phase of the ``n``-th command of a bank nothing is known of: the van der
    Corput sequence (0, 1/2, 1/4, 3/4, 1/8...), so commands started together poll at
    interleaved times and the first of them to finish brackets the end to a fraction of the
    spacing, instead of all of them polling at the same 2 s steps."""
    phase, weight = 0.0, 0.5
    n = max(0, n)
    while n:
        if n & 1:
            phase += weight
        n >>= 1
        weight /= 2
    return phase


@dataclass(frozen=True, slots=True)
class Aim:
    """Where one command's aimed poll lands (elapsed seconds), and whether it probes."""

    at: float
    probe: bool = False


@dataclass(slots=True)
class Bracket:
    """What is known of one bank's command end: polls at ``safe`` found it finished, polls at
    ``floor`` found it running (``floor <= safe``)."""

    safe: float
    floor: float
    miss_step: float = MISS_STEP_SECONDS
    aimed: int = 0


def learned(bracket: Bracket | None, *, finished_at: float, running_at: float | None) -> Bracket:
    """The bracket after a command that had no aim (the first of its bank, or a resumed one)."""
    floor = running_at if running_at is not None else 0.0
    if bracket is None:
        return Bracket(safe=finished_at, floor=min(floor, finished_at))
    safe = min(bracket.safe, finished_at)
    return Bracket(
        safe=safe,
        floor=min(safe, max(bracket.floor, floor)),
        miss_step=bracket.miss_step,
        aimed=bracket.aimed,
    )


def after_aimed(
    bracket: Bracket, aim: Aim, *, hit: bool, finished_at: float, running_at: float | None
) -> Bracket:
    """The bracket after a command whose poll aimed at ``aim`` found it finished (``hit``) or
    still running.

    Moves are taken from the aim, not from the current bracket: commands started together were
    aimed alike, and their outcomes count as one observation instead of moving it once each.
    """
    safe, floor, step = bracket.safe, bracket.floor, bracket.miss_step
    if aim.probe:
        if hit:
            safe = min(safe, aim.at)
        else:
            floor = max(floor, aim.at)
    elif hit:
        floor = max(0.0, floor - FLOOR_DECAY_SECONDS)
        step = MISS_STEP_SECONDS
    else:
        base = aim.at - AIM_MARGIN_SECONDS
        seen_running = max(aim.at, running_at if running_at is not None else aim.at)
        floor = max(floor, seen_running)
        if base >= safe:
            # A miss against the current ``safe`` (not one a batch-mate's miss already raised).
            safe = max(safe, seen_running) + step
            step = min(MISS_STEP_MAX_SECONDS, 2 * step)
        # The final poll found it finished: never aim later than that.
        safe = min(safe, max(finished_at, floor))
    return Bracket(safe=safe, floor=min(floor, safe), miss_step=step, aimed=bracket.aimed)


def next_aim(bracket: Bracket) -> Aim:
    """The aim of the next command of the bracket's bank (its ``aimed`` count is the command's
    number): a probe of the bracket's middle for one command in ``PROBE_EVERY`` while the bracket
    is wider than ``RESOLUTION_SECONDS``, just after ``safe`` otherwise."""
    width = bracket.safe - bracket.floor
    if width > RESOLUTION_SECONDS and bracket.aimed % PROBE_EVERY == PROBE_EVERY - 1:
        return Aim(at=bracket.floor + width / 2, probe=True)
    return Aim(at=bracket.safe + AIM_MARGIN_SECONDS)


@dataclass(slots=True)
class DurationEstimates:
    """Learned command ends per target (bank). In memory: relearned in a few imports after a
    restart, and a wrong guess only costs poll latency, never a rule."""

    by_target: dict[str, Bracket] = field(default_factory=dict)
    # Commands polled with nothing known (for their first polls' phases).
    discovering: int = 0

    def next_phase(self) -> float:
        """The first-poll phase of one more command with no aim (see :func:`discovery_phase`)."""
        phase = discovery_phase(self.discovering)
        self.discovering += 1
        return phase

    def expected(self, target: str | None) -> float | None:
        """Elapsed seconds at which a command of ``target`` is known to have ended, or None.

        With no target (the Default Import's reply names no bank yet), the quickest known
        bank's: a poll placed too early only finds the command still running.
        """
        if target is None:
            return min((b.safe for b in self.by_target.values()), default=None)
        bracket = self.by_target.get(target)
        return None if bracket is None else bracket.safe

    def aim(self, target: str | None) -> Aim | None:
        """The aim for one more command of ``target`` (counted, for the choice of probes);
        for an unknown bank, just after the quickest known end, and never a probe."""
        if target is None:
            quickest = self.expected(None)
            return None if quickest is None else Aim(at=quickest + AIM_MARGIN_SECONDS)
        bracket = self.by_target.get(target)
        if bracket is None:
            return None
        aim = next_aim(bracket)
        bracket.aimed += 1
        return aim

    def observe(
        self,
        target: str | None,
        *,
        aim: Aim | None,
        hit: bool | None,
        finished_at: float,
        running_at: float | None = None,
    ) -> None:
        """Learn from one finished command.

        Args:
            target: the bank the command ran against.
            aim: the aim of its aimed poll (from :meth:`aim` for this bank), None if it had none.
            hit: whether that poll found it finished (None when no poll was aimed).
            finished_at: elapsed seconds at the poll that saw the final state (an upper bound).
            running_at: elapsed seconds at the last poll that saw the command running (a lower
                bound), if any.
        """
        key = target or ""
        bracket = self.by_target.get(key)
        if bracket is None or aim is None or hit is None:
            self.by_target[key] = learned(bracket, finished_at=finished_at, running_at=running_at)
        else:
            self.by_target[key] = after_aimed(
                bracket, aim, hit=hit, finished_at=finished_at, running_at=running_at
            )


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with full jitter in its upper half: ``[d/2, d]``, ``d = base * 2**n``.

    Args:
        attempt: 0 for the first retry.
        base: the first delay.
        cap: the largest delay.
        rng: a random source (seeded in tests).
    """
    delay = min(cap, base * 2.0 ** max(0, min(attempt, 30)))
    r = rng.random() if rng is not None else random.random()
    return delay / 2 + r * delay / 2


def jobs_quota_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Wait after ``JobsQuotaExceeded``: 10-15 s, growing with each refusal (at most 2 min)."""
    r = rng.random() if rng is not None else random.random()
    return min(120.0, (10.0 + 5.0 * r) * (1.5 ** max(0, min(attempt, 10))))


# What a Default Import's request may take at most: httpx applies the timeout to each of
# connect, write, read and pool acquisition.
REQUEST_TIMEOUT_PHASES = 4
# Beyond the worst case, for the sender's write itself and clock differences between hosts.
REPLY_GRACE_MARGIN_SECONDS = 5.0


def late_reply_grace(*, request_timeout: float, storage_retry_max: float) -> float:
    """How long an adopter waits before it resolves, by a second Default Import, an import
    whose first one was sent by a claimer whose lease lapsed (phase ``starting``, no command
    id): that claimer may still get the reply and store the command id late.

    The sender's request ends at most ``REQUEST_TIMEOUT_PHASES * request_timeout`` after it was
    sent, which was before the adopter adopted; from then it retries the write at most
    ``storage_retry_max`` apart while the database refuses it, and the adopter adopts only once
    the database answers again. Counted from the adoption, so an outage of any length is
    covered (a sender frozen for longer than this is not).
    """
    return REQUEST_TIMEOUT_PHASES * request_timeout + storage_retry_max + REPLY_GRACE_MARGIN_SECONDS
