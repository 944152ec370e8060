"""Pure timing rules of the import pipeline: poll spacing, learned command durations, back-off.

Kontomatik asks for Get Import Result every 2-5 s. Within that band, the pipeline places each poll
just after the moment the command is expected to end, so a slot is handed back as soon as the
command is done. The expectation is learned per bank (target) as a running quantile of observed
durations: a poll aimed at the estimate that finds the command finished nudges it down a little,
one that finds it still running pushes it up more, so most aimed polls land just after the end.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

# Aim this long after the expected end: a poll that lands a hair early costs a whole extra
# spacing (>= 2 s), one that lands a little late costs only the margin.
AIM_MARGIN_SECONDS = 0.15
# A miss moves the estimate up HIT_STEP * MISS_FACTOR, a hit moves it down HIT_STEP: the estimate
# settles where about MISS_FACTOR / (MISS_FACTOR + 1) of aimed polls are hits.
HIT_STEP_SECONDS = 0.05
MISS_FACTOR = 9.0
# The first observation brackets the end between two polls; hits then descend through that
# bracket in this many steps.
DESCENT_STEPS = 4.0


def poll_delay(
    elapsed: float, expected: float | None, *, min_seconds: float, max_seconds: float
) -> float:
    """Seconds to wait before the next Get Import Result.

    Args:
        elapsed: seconds since the Default Import (or the previous poll's reference point) at the
            moment of the previous request: the next poll happens at ``elapsed + delay``.
        expected: the learned duration of such commands, or None when nothing is known yet.
        min_seconds: the closest two polls may be.
        max_seconds: the furthest apart two polls may be.

    Returns:
        A delay within ``[min_seconds, max_seconds]``, chosen so that, when the expected end lies
        ahead, some poll lands just after it.
    """
    if expected is None:
        return min_seconds
    remaining = expected + AIM_MARGIN_SECONDS - elapsed
    if remaining <= min_seconds:
        return min_seconds
    # Split what is left into the fewest equal steps that fit: the last one lands on the aim
    # whenever any sequence of allowed steps can.
    steps = math.ceil(remaining / max_seconds)
    return max(min_seconds, min(max_seconds, remaining / steps))


@dataclass(slots=True)
class DurationEstimates:
    """Learned command durations per target (bank), in seconds. In memory: it is relearned in a
    few imports after a restart, and a wrong guess only costs poll latency, never a rule."""

    by_target: dict[str, float] = field(default_factory=dict)
    # How far a hit lowers each estimate: large while descending from the first (upper-bound)
    # observation, HIT_STEP_SECONDS once an aimed poll has missed.
    steps: dict[str, float] = field(default_factory=dict)

    def expected(self, target: str | None) -> float | None:
        """The current estimate for ``target``, or None.

        With no target (the Default Import's reply names no bank yet), the quickest known
        bank's: a poll placed too early only finds the command still running.
        """
        if target is None:
            return min(self.by_target.values(), default=None)
        return self.by_target.get(target)

    def observe(
        self,
        target: str | None,
        *,
        aimed_hit: bool | None,
        finished_at: float,
        aimed_at: float | None = None,
        running_at: float | None = None,
    ) -> None:
        """Learn from one finished command.

        Args:
            target: the bank the command ran against.
            aimed_hit: True when the poll aimed at the estimate found the command finished, False
                when it found it still running, None when no poll was aimed (no estimate yet).
            finished_at: elapsed seconds at the poll that saw the final state (an upper bound).
            aimed_at: the estimate that poll was aimed at; the current one when None.
            running_at: elapsed seconds at the last poll that saw the command running (a lower
                bound), if any.
        """
        key = target or ""
        current = self.by_target.get(key)
        if current is None:
            self.by_target[key] = finished_at
            # The end lies between the last running poll and this one: descend through that
            # bracket in a few hits rather than dozens of HIT_STEP_SECONDS.
            width = finished_at - running_at if running_at is not None else 0.0
            self.steps[key] = max(HIT_STEP_SECONDS, width / DESCENT_STEPS)
        elif aimed_hit is None:
            self.by_target[key] = min(current, finished_at)
        else:
            # Moves are taken from the aim, not from the current value: commands started
            # together were aimed at the same value, and their polls count as one observation
            # instead of pushing the estimate once per command.
            aim = current if aimed_at is None else aimed_at
            if aimed_hit:
                # A hit aimed below the current value says nothing about it: a miss raised it
                # since (typically a command of the same batch whose poll came a bit earlier).
                if aim >= current:
                    step = self.steps.get(key, HIT_STEP_SECONDS)
                    self.by_target[key] = max(0.0, aim - step)
            else:
                self.steps[key] = HIT_STEP_SECONDS
                self.by_target[key] = max(current, aim + HIT_STEP_SECONDS * MISS_FACTOR)


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
