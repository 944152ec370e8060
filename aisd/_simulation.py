"""The pure parts of ``aisd simulate``: the scenario, the rules a run must keep, the report.

:mod:`aisd.simulate` runs the real planner and pipeline and gathers what happened into a
:class:`Summary`; everything here is a function of such values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aisd.billing import BilledImport, Report, TokenLife, cycles

__all__ = [
    "CONSENT_SPREAD",
    "ConsentPlan",
    "Progress",
    "Setup",
    "Summary",
    "billed_totals",
    "max_in_window",
    "months_between",
    "next_on_grid",
    "plan_consents",
    "progress_line",
    "render",
    "violations",
]

# Consents arrive over the first hours of a run, as they would after a launch.
CONSENT_SPREAD = timedelta(hours=6)
# The second of every SHARE_EVERY consents reaches only an account of the one before it (a
# joint account seen by two users), so the shared rolling quota is exercised.
SHARE_EVERY = 3
_DAY = timedelta(days=1)
# The time left is estimated only past the start, where the first imports' cost would skew it.
ESTIMATE_FROM = 0.02


@dataclass(frozen=True, slots=True)
class ConsentPlan:
    """One consent of the scenario.

    Attributes:
        owner_external_id: the owner's id.
        offset: when the consent arrives, after the start of the run.
        access: the token's validity from consent (``expiresAt`` = consent + access).
        shares_with: index of the earlier consent whose first account this one reaches
            (instead of accounts of its own), or None.
    """

    owner_external_id: str
    offset: timedelta
    access: timedelta
    shares_with: int | None = None


def plan_consents(tokens: int, days: int, access_days: int) -> list[ConsentPlan]:
    """The scenario: ``tokens`` consents spread over the first hours of a ``days``-day run.

    The second of every three consents shares an account with the first. When the run is shorter
    than ``access_days``, the last consent gets a token that expires inside the run (a day
    before its end, or after 12 hours in a one-day run), so warnings, the final refresh and
    expiry happen.
    """
    run = _DAY * days
    spread = min(CONSENT_SPREAD, run / 4)
    access = _DAY * access_days
    plans = []
    for i in range(tokens):
        shares = i - 1 if i % SHARE_EVERY == 1 else None
        plans.append(ConsentPlan(f"sim-{i + 1:03d}", spread * i / tokens, access, shares))
    if plans and days < access_days:
        short = max(timedelta(hours=12), run - _DAY)
        last = plans[-1]
        plans[-1] = ConsentPlan(
            last.owner_external_id, last.offset, min(access, short), last.shares_with
        )
    return plans


def next_on_grid(origin: datetime, step: timedelta, moment: datetime) -> datetime:
    """The first ``origin + k * step`` (k a whole number) at or after ``moment``."""
    if moment <= origin:
        return origin
    return origin + step * math.ceil((moment - origin) / step)


def max_in_window(times: Sequence[datetime], window: timedelta) -> int:
    """The most of ``times`` in any window ``(t - window, t]``: the provider's rolling count."""
    ordered = sorted(times)
    best = lo = 0
    for hi, moment in enumerate(ordered):
        while ordered[lo] <= moment - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def months_between(start: datetime, end: datetime) -> list[tuple[int, int]]:
    """Every UTC month ``(year, month)`` from ``start``'s to ``end``'s, in order."""
    first = start.year * 12 + start.month - 1
    last = end.year * 12 + end.month - 1
    return [(n // 12, n % 12 + 1) for n in range(first, last + 1)]


def billed_totals(
    tokens: Sequence[TokenLife], imports: Sequence[BilledImport], now: datetime
) -> tuple[int, int]:
    """Cycles ended by ``now`` and the successful imports inside them, counted over the
    whole run without regard to months (the check on the monthly reports)."""
    ended = {token.token_id: cycles(token, now) for token in tokens}
    billed = sum(
        1
        for item in imports
        if any(c.start <= item.finished_at < c.end for c in ended.get(item.token_id, ()))
    )
    return sum(len(c) for c in ended.values()), billed


@dataclass(frozen=True, slots=True)
class Summary:
    """What a simulation did, as the report shows it.

    Attributes:
        started_at: the virtual start.
        ended_at: the virtual end (after the in-flight imports were drained).
        real_seconds: wall-clock seconds the run took.
        refreshes_per_day: the setting in force.
        imports: counts per kind, then per state.
        reuses: Reuse Multiple Access calls sent (the ledger's rows).
        windows: per account, the most reuses the sandbox saw in any rolling 24 h.
        limit_answers: reuses the sandbox refused with ``MultipleAccessLimitExceeded``.
        late_reuses: reuses sent at or after their token's ``expiresAt``.
        events: counts per event type.
        tokens: counts per token state.
        months: the billing report of every month the run touched.
        billed: ``(cycles, imports)`` over every ended cycle, computed independently.
    """

    started_at: datetime
    ended_at: datetime
    real_seconds: float
    refreshes_per_day: int
    imports: Mapping[str, Mapping[str, int]]
    reuses: int
    windows: Mapping[str, int]
    limit_answers: int
    late_reuses: int
    events: Mapping[str, int]
    tokens: Mapping[str, int]
    months: tuple[Report, ...]
    billed: tuple[int, int]

    @property
    def unfinished(self) -> int:
        """Imports still queued or running at the end."""
        return sum(
            n
            for states in self.imports.values()
            for state, n in states.items()
            if state not in ("successful", "failed")
        )


def violations(summary: Summary) -> list[str]:
    """Every rule the run broke, one sentence each (empty when all held)."""
    found = [
        f"account {account}: {n} reuses within 24 h (limit {summary.refreshes_per_day})"
        for account, n in sorted(summary.windows.items())
        if n > summary.refreshes_per_day
    ]
    if summary.limit_answers:
        found.append(f"the sandbox answered MultipleAccessLimitExceeded {summary.limit_answers}x")
    if summary.late_reuses:
        found.append(f"{summary.late_reuses} reuses were sent after their token expired")
    if summary.unfinished:
        found.append(f"{summary.unfinished} imports did not end")
    monthly = (sum(r.cycles for r in summary.months), sum(r.imports for r in summary.months))
    if monthly != summary.billed:
        found.append(
            f"billing: months sum to {monthly[0]} cycles/{monthly[1]} imports, "
            f"all ended cycles hold {summary.billed[0]}/{summary.billed[1]}"
        )
    return found


@dataclass(frozen=True, slots=True)
class Setup:
    """What a simulation was set up with, as the report explains it.

    Attributes:
        days: virtual days run.
        plans: the scenario's consents.
        refreshes_per_day: Reuse Multiple Access allowed per account in any rolling 24 h.
        history_days: history the first import of a consent asks for.
        overlap_days: how far before the last import a refresh starts again.
        command_seconds: how long a sandbox command runs.
        poll_seconds: the spacing of Get Import Result polls, ``(min, max)``.
        max_running: commands running upstream at once at most.
        tick_seconds: the planner's periodic tick.
        database: where the temporary database lived.
    """

    days: int
    plans: tuple[ConsentPlan, ...]
    refreshes_per_day: int
    history_days: int
    overlap_days: int
    command_seconds: float
    poll_seconds: tuple[float, float]
    max_running: int
    tick_seconds: float
    database: str


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run is, in virtual time.

    Attributes:
        started_at: the virtual start.
        ends_at: the virtual end of planning (the drain may run a little longer).
        now: the virtual time now.
        imports: Default Imports sent upstream so far.
    """

    started_at: datetime
    ends_at: datetime
    now: datetime
    imports: int

    @property
    def fraction(self) -> float:
        """The share of the planned span done, 0 to 1."""
        total = (self.ends_at - self.started_at).total_seconds()
        done = (self.now - self.started_at).total_seconds()
        return 1.0 if total <= 0 else min(1.0, max(0.0, done / total))


def progress_line(progress: Progress, real_seconds: float, *, bar: int = 0) -> str:
    """One line of progress: virtual days done, imports sent, their rate and the time left;
    with a ``bar`` of that many characters when ``bar`` is positive (a terminal)."""
    total_days = (progress.ends_at - progress.started_at) / _DAY
    day = progress.fraction * total_days
    rate = progress.imports / real_seconds if real_seconds > 0 else 0.0
    left = real_seconds * (1 - progress.fraction) / progress.fraction if progress.fraction else 0
    text = (
        f"day {day:5.1f}/{total_days:g}  imports {progress.imports:>6}  "
        f"{rate:6.1f} imports/s  elapsed {_duration(real_seconds)}"
    )
    if ESTIMATE_FROM <= progress.fraction < 1:
        text += f"  left ~{_duration(left)}"
    if bar <= 0:
        return text
    filled = round(bar * progress.fraction)
    return f"[{'#' * filled}{'.' * (bar - filled)}] {progress.fraction:4.0%}  {text}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items())) or "none"


def _setup_lines(setup: Setup) -> list[str]:
    plans = setup.plans
    shared = sum(1 for p in plans if p.shares_with is not None)
    spread = max((p.offset for p in plans), default=timedelta(0))
    access = {p.access for p in plans}
    longest = max(access, default=timedelta(0))
    short = [p for p in plans if p.access < longest]
    lines = [
        "setup",
        f"  consents      {len(plans)}, arriving over the first {_hours(spread)}; {shared} of "
        "them reach only an account of the consent before (a joint account), so two tokens",
        "                share that account's quota",
        f"  tokens        valid {longest / _DAY:g} days from consent"
        + (
            f"; {short[0].owner_external_id}'s only {_hours(short[0].access)}, so its "
            "warnings, last refresh and expiry happen inside the run"
            if short
            else ""
        ),
        f"  quota         {setup.refreshes_per_day} Reuse Multiple Access per account in any "
        "rolling 24 h (AISD_REFRESHES_PER_DAY)",
        f"  imports       the first asks {setup.history_days} days of history; a refresh "
        f"starts {setup.overlap_days} days before the last import",
        f"  upstream      the in-process sandbox: commands run {setup.command_seconds:g} s, "
        f"polled {setup.poll_seconds[0]:g}-{setup.poll_seconds[1]:g} s apart, at most "
        f"{setup.max_running} at once",
        f"  planner       ticks every {setup.tick_seconds:g} s of virtual time and at each "
        "token's due time; the clock jumps over idle time",
        f"  database      a temporary SQLite file in {setup.database}, deleted afterwards",
    ]
    return lines


def _hours(span: timedelta) -> str:
    hours = span / timedelta(hours=1)
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} h"


def render(summary: Summary, setup: Setup) -> str:
    """The report for people: the setup, every figure with what it means, and the verdict."""
    span = summary.ended_at - summary.started_at
    limit = summary.refreshes_per_day
    peaks = Counter(summary.windows.values())
    months = summary.months
    lines = [
        f"aisd simulate: {setup.days} virtual days, the real planner and pipeline",
        *_setup_lines(setup),
        "results",
        f"  virtual span  {summary.started_at:%Y-%m-%d %H:%M}Z .. "
        f"{summary.ended_at:%Y-%m-%d %H:%M}Z ({span / _DAY:.2f} days, to the last import's end)",
        f"  real time     {summary.real_seconds:.1f} s of wall clock for the whole run",
        "  imports       by kind, then by final state (every one must end)",
        *(f"    {kind:<11} {_counts(states)}" for kind, states in sorted(summary.imports.items())),
        f"  reuses        {summary.reuses} Reuse Multiple Access sent (each starts a refresh and "
        "counts against its accounts' quota)",
        f"  refused       {summary.limit_answers} answered MultipleAccessLimitExceeded "
        "(the provider's quota check; 0 expected)",
        f"  late          {summary.late_reuses} sent at or after their token's expiry (0 expected)",
        f"  peak use      the most reuses the sandbox saw reach one account in any rolling 24 h "
        f"(limit {limit}):",
        *(
            f"    {n} in 24 h   {peaks[n]} account{'s' if peaks[n] != 1 else ''}"
            for n in sorted(peaks, reverse=True)
        ),
        f"  events        the feed's events by type: {_counts(summary.events)}",
        f"  tokens        by state at the end: {_counts(summary.tokens)}",
        "  billing       per month: billing cycles ended and the successful imports in them",
        "                month     cycles  imports (initial/refresh)",
        *(
            f"                {r.month}  {r.cycles:>6}  {r.imports:>7} "
            f"({r.initial_imports}/{r.refresh_imports})"
            for r in months
        ),
        f"                total    {sum(r.cycles for r in months):>6}  "
        f"{sum(r.imports for r in months):>7}  (all ended cycles counted at once: "
        f"{summary.billed[0]}/{summary.billed[1]}, must be equal)",
    ]
    broken = violations(summary)
    lines.append("verdict         " + ("every rule held" if not broken else "RULES BROKEN"))
    lines.extend(f"  - {problem}" for problem in broken)
    return "\n".join(lines)
