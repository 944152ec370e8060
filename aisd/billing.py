"""Billing: what Kontomatik invoices, computed from tokens and their successful imports.

Interpretation: each token is split into 30-day cycles starting at its consent time
(``created_at``): cycle *i* covers ``[created_at + 30 d * i, created_at + 30 d * (i + 1))``. The
token's ``expires_at`` (consent + ``AISD_ACCESS_DAYS``) caps the last cycle, so 180 days are
exactly 6 full cycles; a token that ends sooner (revoked, ``reauth_required``, or expired and
noticed late) ends its current cycle at ``ended_at`` (or ``expires_at`` if earlier), and no
cycle starts after that. A cycle is due in the UTC month in which it ends, and is billed only
once it has ended (``end <= now``). Every successful import whose finish time falls inside a
cycle ``[start, end)`` is billed with that cycle: an import finishing exactly on a boundary
belongs to the next cycle, and one finishing after the token's last cycle is not billed. The
consent's first import counts like any other; reports show first imports and refreshes apart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = [
    "CYCLE",
    "BilledImport",
    "Cycle",
    "ImportKindName",
    "MonthForecast",
    "Report",
    "TokenLife",
    "TokenLine",
    "cycles",
    "forecast",
    "month_of",
    "report",
]

CYCLE = timedelta(days=30)
_DAY = timedelta(days=1)

ImportKindName = Literal["initial", "refresh"]
_KINDS: tuple[ImportKindName, ...] = ("initial", "refresh")


@dataclass(frozen=True, slots=True)
class TokenLife:
    """A token's billable life.

    Attributes:
        token_id: the opaque token id.
        owner_external_id: the owner, or None once forgotten (billing rows stay anonymous).
        created_at: the consent time; cycles start here.
        expires_at: consent + access days; caps the last cycle.
        ended_at: when it was revoked, needed re-authorization or was found expired; else None.
    """

    token_id: str
    owner_external_id: str | None
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BilledImport:
    """One successful import of a token."""

    token_id: str
    finished_at: datetime
    kind: ImportKindName


@dataclass(frozen=True, slots=True)
class Cycle:
    """One 30-day cycle ``[start, end)``; ``cut_short`` when it ended before its 30 days."""

    token_id: str
    index: int
    start: datetime
    end: datetime
    cut_short: bool

    @property
    def month(self) -> str:
        """The UTC month (``YYYY-MM``) in which it is due."""
        return month_of(self.end)


@dataclass(frozen=True, slots=True)
class TokenLine:
    """One token's share of a month."""

    token_id: str
    owner_external_id: str | None
    cycles: int
    imports: int
    initial_imports: int
    refresh_imports: int


@dataclass(frozen=True, slots=True)
class Report:
    """What is due for one UTC month: its ended cycles and the imports inside them."""

    month: str
    cycles: int
    imports: int
    initial_imports: int
    refresh_imports: int
    tokens: tuple[TokenLine, ...]


@dataclass(frozen=True, slots=True)
class MonthForecast:
    """Expected cycles and imports due in one UTC month."""

    month: str
    cycles: int
    imports: int


def month_of(moment: datetime) -> str:
    """The UTC month of an aware datetime, as ``YYYY-MM``."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def _schedule(token: TokenLife) -> list[Cycle]:
    """Every cycle of the token as far as known now (an active token's run to its expiry)."""
    cap = token.expires_at if token.ended_at is None else min(token.expires_at, token.ended_at)
    result: list[Cycle] = []
    start = token.created_at
    while start < cap:
        full_end = start + CYCLE
        end = min(full_end, cap)
        result.append(Cycle(token.token_id, len(result), start, end, end < full_end))
        start = end
    return result


def cycles(token: TokenLife, now: datetime) -> list[Cycle]:
    """The token's ended, hence billable, cycles (``end <= now``), oldest first."""
    return [cycle for cycle in _schedule(token) if cycle.end <= now]


class _ImportIndex:
    """Finish times per token and kind, sorted, for counting those inside a span."""

    def __init__(self, imports: Iterable[BilledImport]) -> None:
        self._times: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for item in imports:
            self._times[item.token_id, item.kind].append(item.finished_at)
        for times in self._times.values():
            times.sort()

    def count(self, token_id: str, kind: ImportKindName, start: datetime, end: datetime) -> int:
        times = self._times.get((token_id, kind), [])
        return max(0, bisect_left(times, end) - bisect_left(times, start))


def report(
    tokens: Iterable[TokenLife],
    imports: Iterable[BilledImport],
    year: int,
    month: int,
    now: datetime,
) -> Report:
    """What is due for one UTC month, as far as ``now`` knows.

    Args:
        tokens: every token (any state) whose cycles may end in that month.
        imports: their successful imports.
        year: the month's year.
        month: the month, 1..12.
        now: the current time; only cycles ended by then are billed.

    Returns:
        The month's totals and one line per token with a cycle due, ordered by token id.

    Raises:
        ValueError: the month is not within 1..12.
    """
    if not 1 <= month <= 12:
        raise ValueError("month must be within 1..12")
    label = f"{year:04d}-{month:02d}"
    index = _ImportIndex(imports)
    lines: list[TokenLine] = []
    for token in sorted(tokens, key=lambda t: t.token_id):
        due = [cycle for cycle in cycles(token, now) if cycle.month == label]
        if not due:
            continue
        initial = sum(index.count(token.token_id, "initial", c.start, c.end) for c in due)
        refresh = sum(index.count(token.token_id, "refresh", c.start, c.end) for c in due)
        lines.append(
            TokenLine(
                token.token_id,
                token.owner_external_id,
                len(due),
                initial + refresh,
                initial,
                refresh,
            )
        )
    return Report(
        month=label,
        cycles=sum(line.cycles for line in lines),
        imports=sum(line.imports for line in lines),
        initial_imports=sum(line.initial_imports for line in lines),
        refresh_imports=sum(line.refresh_imports for line in lines),
        tokens=tuple(lines),
    )


def _months_from(now: datetime, months: int) -> list[str]:
    utc = now.astimezone(UTC)
    ordinal = utc.year * 12 + utc.month - 1
    return [f"{(ordinal + i) // 12:04d}-{(ordinal + i) % 12 + 1:02d}" for i in range(months)]


def forecast(
    tokens: Iterable[TokenLife],
    now: datetime,
    months: int,
    refreshes_per_day: int,
    imports: Sequence[BilledImport] = (),
) -> list[MonthForecast]:
    """Expected cycles and imports due in each of ``months`` UTC months from ``now``'s month.

    Cycles already ended count exactly as :func:`report` counts them; a cycle still running is
    assumed to run to its scheduled end (the token staying active until its expiry), with
    ``refreshes_per_day`` successful refreshes per day from ``now`` on, added to the imports
    already finished in it.

    Args:
        tokens: every token whose cycles may fall due in those months.
        now: the current time.
        months: how many months to project (the current one first).
        refreshes_per_day: the refresh rate assumed for active tokens.
        imports: the successful imports known so far (for cycles already under way).

    Returns:
        One forecast per month, in order.
    """
    labels = _months_from(now, months)
    wanted = set(labels)
    index = _ImportIndex(imports)
    totals: dict[str, list[int]] = {label: [0, 0] for label in labels}
    for token in tokens:
        for cycle in _schedule(token):
            if cycle.month not in wanted:
                continue
            done_until = min(cycle.end, now)
            known = sum(
                index.count(token.token_id, kind, cycle.start, done_until) for kind in _KINDS
            )
            ahead = max(timedelta(0), cycle.end - max(cycle.start, now))
            totals[cycle.month][0] += 1
            totals[cycle.month][1] += known + ahead * refreshes_per_day // _DAY
    return [MonthForecast(label, *totals[label]) for label in labels]
