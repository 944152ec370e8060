"""The pure parts of ``aisd simulate``: the scenario, the rules a run must keep, the report.

:mod:`aisd.simulate` runs the real planner and pipeline and gathers what happened into a
:class:`Summary`; everything here is a function of such values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aisd.billing import BilledImport, Report, TokenLife, cycles

__all__ = [
    "CONSENT_SPREAD",
    "ConsentPlan",
    "Summary",
    "billed_totals",
    "max_in_window",
    "months_between",
    "next_on_grid",
    "plan_consents",
    "render",
    "violations",
]

# Consents arrive over the first hours of a run, as they would after a launch.
CONSENT_SPREAD = timedelta(hours=6)
# The second of every SHARE_EVERY consents reaches only an account of the one before it (a
# joint account seen by two users), so the shared rolling quota is exercised.
SHARE_EVERY = 3
_DAY = timedelta(days=1)


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


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items())) or "none"


def render(summary: Summary) -> str:
    """The report for people, ending with the verdict."""
    span = summary.ended_at - summary.started_at
    lines = [
        f"virtual span   {summary.started_at:%Y-%m-%d %H:%M}Z .. "
        f"{summary.ended_at:%Y-%m-%d %H:%M}Z ({span.total_seconds() / 86400:.2f} days)",
        f"real time      {summary.real_seconds:.1f} s",
        "imports",
        *(f"  {kind:<12} {_counts(states)}" for kind, states in sorted(summary.imports.items())),
        f"reuses         {summary.reuses} sent; MultipleAccessLimitExceeded answers: "
        f"{summary.limit_answers}",
        f"max reuses per account in any rolling 24 h (limit {summary.refreshes_per_day})",
        *(f"  {account:<34} {n}" for account, n in sorted(summary.windows.items())),
        f"events         {_counts(summary.events)}",
        f"tokens         {_counts(summary.tokens)}",
        "billing        month     cycles  imports (initial/refresh)",
        *(
            f"               {r.month}  {r.cycles:>6}  {r.imports:>7} "
            f"({r.initial_imports}/{r.refresh_imports})"
            for r in summary.months
        ),
        f"               total    {sum(r.cycles for r in summary.months):>6}  "
        f"{sum(r.imports for r in summary.months):>7}  (all ended cycles: "
        f"{summary.billed[0]}/{summary.billed[1]})",
    ]
    broken = violations(summary)
    lines.append("verdict        " + ("every rule held" if not broken else "RULES BROKEN"))
    lines.extend(f"  - {problem}" for problem in broken)
    return "\n".join(lines)
