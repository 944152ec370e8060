"""An import's phases and the steps between them: one pure table, used by the pipeline and the
store (which passes the allowed phases into every fenced write instead of spelling them in SQL).

queued -> (refresh only) reusing -> ready -> starting -> polling -> done. ``reusing``: a Reuse
Multiple Access was recorded as sent, no session known yet. ``ready``: a session is known, no
Default Import sent on it yet. ``starting``: a Default Import was recorded as sent, no command
id known yet. ``polling``: a command id is known; Get Import Result until a final state.

Also here: the running-commands budget's rule (additive increase, multiplicative decrease
after ``JobsQuotaExceeded``). The events the steps append are built in :mod:`aisd.events`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "IN_FLIGHT",
    "OPEN",
    "TRANSITIONS",
    "Budget",
    "IllegalStep",
    "ImportPhase",
    "Step",
    "allowed_from",
    "holds_slot",
    "lowered",
    "raised",
    "state_of",
    "target",
]


class ImportPhase(enum.StrEnum):
    """Where an import stands in the pipeline; what a restart resumes from."""

    QUEUED = "queued"
    REUSING = "reusing"
    READY = "ready"
    STARTING = "starting"
    POLLING = "polling"
    DONE = "done"


class Step(enum.StrEnum):
    """A write the pipeline makes about one import."""

    REUSE_SENT = "reuse_sent"  # a Reuse Multiple Access recorded before it is sent
    SESSION = "session"  # its session arrived
    IMPORT_SENT = "import_sent"  # a Default Import recorded before it is sent
    COMMAND = "command"  # the Default Import was accepted: its command id
    POLL = "poll"  # Get Import Result answered with a non-final state
    WAIT = "wait"  # retry later, staying where it stands
    NOT_STARTED = "not_started"  # a Default Import provably never started: back to ready
    REQUEUE = "requeue"  # back to the queue (a lost or refused Reuse, a retry later)
    ENDED_UPSTREAM = "ended_upstream"  # the command ended: its slot is free, its result not stored
    LET_GO = "let_go"  # the claimer stops driving it (a step failed); a later claim adopts it
    SUCCEED = "succeed"  # the command ended with a result
    FAIL = "fail"  # the import ends without data


IN_FLIGHT = frozenset(
    {ImportPhase.REUSING, ImportPhase.READY, ImportPhase.STARTING, ImportPhase.POLLING}
)
OPEN = IN_FLIGHT | {ImportPhase.QUEUED}

# step -> (phases it may start from, phase it leads to; None: stays where it is)
TRANSITIONS: Mapping[Step, tuple[frozenset[ImportPhase], ImportPhase | None]] = {
    Step.REUSE_SENT: (frozenset({ImportPhase.QUEUED}), ImportPhase.REUSING),
    Step.SESSION: (frozenset({ImportPhase.REUSING}), ImportPhase.READY),
    # From queued for a consent's first import, which brings its own session.
    Step.IMPORT_SENT: (
        frozenset({ImportPhase.QUEUED, ImportPhase.READY, ImportPhase.STARTING}),
        ImportPhase.STARTING,
    ),
    Step.COMMAND: (frozenset({ImportPhase.STARTING}), ImportPhase.POLLING),
    Step.POLL: (frozenset({ImportPhase.POLLING}), None),
    Step.WAIT: (OPEN, None),
    Step.NOT_STARTED: (frozenset({ImportPhase.READY, ImportPhase.STARTING}), ImportPhase.READY),
    Step.REQUEUE: (frozenset({ImportPhase.QUEUED, ImportPhase.REUSING}), ImportPhase.QUEUED),
    Step.ENDED_UPSTREAM: (frozenset({ImportPhase.POLLING}), None),
    Step.LET_GO: (OPEN, None),
    Step.SUCCEED: (frozenset({ImportPhase.POLLING}), ImportPhase.DONE),
    Step.FAIL: (OPEN, ImportPhase.DONE),
}


class IllegalStep(ValueError):
    """A step the table does not allow from the given phase (a bug in the caller)."""


def allowed_from(step: Step) -> frozenset[ImportPhase]:
    """The phases ``step`` may start from."""
    return TRANSITIONS[step][0]


def target(step: Step, current: ImportPhase) -> ImportPhase:
    """The phase after ``step`` from ``current``.

    Raises:
        IllegalStep: the table does not allow ``step`` from ``current``.
    """
    sources, to = TRANSITIONS[step]
    if current not in sources:
        raise IllegalStep(f"{step.value} is not allowed from {current.value}")
    return current if to is None else to


def state_of(phase: ImportPhase, *, succeeded: bool = False) -> str:
    """The CONTRACT state an import in ``phase`` shows (``succeeded`` decides a done one)."""
    if phase == ImportPhase.QUEUED:
        return "queued"
    if phase in IN_FLIGHT:
        return "running"
    return "successful" if succeeded else "failed"


def holds_slot(phase: ImportPhase) -> bool:
    """Whether an import in ``phase`` holds a running-commands slot (a command upstream, or one
    about to be sent)."""
    return phase in IN_FLIGHT


# -- the running-commands budget ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """The shared running-commands budget: ``limit`` slots usable now (below ``ceiling``
    while upstream pushes back), ``strikes`` consecutive ``JobsQuotaExceeded`` refusals."""

    limit: int
    ceiling: int
    strikes: int = 0


def lowered(budget: Budget, held: int) -> Budget:
    """After ``JobsQuotaExceeded``: someone else holds upstream slots, so one fewer than what
    runs now (at least one)."""
    return Budget(max(1, min(budget.limit, held) - 1), budget.ceiling, budget.strikes + 1)


def raised(budget: Budget) -> Budget:
    """After a Default Import was accepted: one more slot, up to the ceiling."""
    return Budget(min(budget.ceiling, budget.limit + 1), budget.ceiling, 0)
