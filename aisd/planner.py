"""The refresh planner: when a token's next unattended refresh may run, and why.

Pure functions over rows the daemon loads: no I/O, no clock reads (``now`` is a parameter).

The rules, from the provider and the API reference (docs/api.md):

- **Quota.** Every Reuse Multiple Access sent counts against every bank account the token
  reaches, in any rolling window (24 h), whatever its outcome; at most ``refreshes_per_day`` per
  account. Accounts are shared by every token that reaches them. A token whose accounts are not
  known yet reaches a pseudo-account of its own (:func:`pseudo_account`), which allows one
  access per window: it may hide a bank account shared with another token. A consent's first
  import is not a Reuse and so never appears in the ledger. An access keeps counting for
  ``window + guard``: the ledger row is written before the call is sent, so the provider
  records it a little later than we do, and the guard absorbs that difference.
- **Spread.** Refreshes follow a grid of ``interval = window / refreshes_per_day``, shifted by
  a per-token phase hashed from the token id (stable across restarts), plus a per-slot jitter
  below ``Rules.jitter``, also hashed, so re-planning at every tick yields the same time. The
  next slot is the first one at least half an interval after the last refresh (or the consent).
- **Failures** back off exponentially from ``backoff_base``, capped at the interval, inside the
  same quota. ``MultipleAccessLimitExceeded`` defers to ``upstream_deferred_until``.
- **End.** Nothing at or after ``expires_at`` (or ``refresh_until``); a last refresh
  ``final_margin`` (minus a hashed jitter) before that end keeps the freshest data. A scheduled
  slot that would leave the final's window full is skipped in favour of the final.
- **Clock.** ``now`` is taken as ``max(now, newest ledger time, last refresh)``: a clock that
  steps back never buys an access. Record ledger rows at :func:`effective_now` for the same
  reason.

A tick should call :func:`decide_due` with the tokens that are due: it re-plans each against a
working ledger that already holds the accesses picked before it, so two tokens sharing an
account are never both let through on the same room.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "Access",
    "DuePicks",
    "LedgerIndex",
    "Plan",
    "Reason",
    "Rules",
    "TokenPlanInput",
    "Usage",
    "backoff_delay",
    "decide_due",
    "effective_now",
    "ledger_horizon",
    "may_refresh_now",
    "phase",
    "plan",
    "pseudo_account",
    "reach",
    "window_usage",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rules:
    """The planner's tunables.

    Attributes:
        refreshes_per_day: accesses allowed per bank account in any rolling ``window`` (1..4).
        window: the provider's rolling window.
        final_margin: how long before the end the final harvest is planned.
        backoff_base: the first back-off after a failed refresh; doubles with each failure.
        jitter: bound of the hashed per-slot jitter (at most a quarter interval, below
            ``final_margin`` unless that is zero).
        guard: extra time an access keeps counting, for the provider's later timestamp.
    """

    refreshes_per_day: int = 4
    window: timedelta = timedelta(hours=24)
    final_margin: timedelta = timedelta(hours=1)
    backoff_base: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(minutes=10)
    guard: timedelta = timedelta(minutes=2)

    def __post_init__(self) -> None:
        if not 1 <= self.refreshes_per_day <= 4:
            raise ValueError("refreshes_per_day must be within 1..4")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.backoff_base <= timedelta(0):
            raise ValueError("backoff_base must be positive")
        if self.final_margin < timedelta(0) or self.guard < timedelta(0):
            raise ValueError("final_margin and guard must not be negative")
        if not timedelta(0) <= self.jitter <= self.interval / 4:
            raise ValueError("jitter must be within 0..interval/4")

    @property
    def interval(self) -> timedelta:
        """The spacing of a token's scheduled refreshes."""
        return self.window / self.refreshes_per_day

    @property
    def span(self) -> timedelta:
        """How long one access counts against an account."""
        return self.window + self.guard


@dataclass(frozen=True, slots=True)
class Access:
    """One Reuse Multiple Access of the ledger (rows proven ``not_sent`` excluded)."""

    token_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TokenPlanInput:
    """What the planner needs to know about one active token.

    Attributes:
        token_id: the opaque token id (never the ``multipleAccessId``).
        created_at: the consent time.
        expires_at: the token's end; nothing is sent at or after it.
        accounts: IBANs the token reaches, from its imports; empty while unknown.
        last_refresh_at: when the last Reuse was sent for it (whatever its outcome).
        failures: consecutive failed refreshes since the last success.
        upstream_deferred_until: set after ``MultipleAccessLimitExceeded``.
        refresh_until: an optional earlier end chosen at consent.
    """

    token_id: str
    created_at: datetime
    expires_at: datetime
    accounts: frozenset[str] = frozenset()
    last_refresh_at: datetime | None = None
    failures: int = 0
    upstream_deferred_until: datetime | None = None
    refresh_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """One account's rolling window as of now.

    Attributes:
        account: the IBAN (or pseudo-account).
        used: accesses counted now.
        limit: accesses allowed.
        next_free_at: when room for one more access appears if the window is full; otherwise
            when the oldest counted access leaves it. None when nothing counts.
    """

    account: str
    used: int
    limit: int
    next_free_at: datetime | None

    @property
    def full(self) -> bool:
        """Whether no access fits now."""
        return self.used >= self.limit


class Reason(enum.StrEnum):
    """Why a plan's time is what it is (or why there is none)."""

    SCHEDULED = "scheduled"
    QUOTA = "quota"
    BACKOFF = "backoff"
    UPSTREAM_LIMIT = "upstream_limit"
    FINAL = "final"
    EXPIRED = "expired"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Plan:
    """The next refresh of a token: ``at`` (never before now) or None, why, and the windows."""

    at: datetime | None
    reason: Reason
    usage: tuple[Usage, ...]


_PSEUDO_PREFIX = "token:"


def pseudo_account(token_id: str) -> str:
    """The account standing for a token whose accounts are not known yet (IBANs have no ':')."""
    return f"{_PSEUDO_PREFIX}{token_id}"


def reach(token_id: str, accounts: frozenset[str]) -> frozenset[str]:
    """The accounts a token's accesses count against."""
    return accounts or frozenset({pseudo_account(token_id)})


def effective_now(now: datetime, ledger: Sequence[Access]) -> datetime:
    """``now``, never earlier than the newest ledger row (a clock stepping back buys nothing)."""
    return max([now, *(access.at for access in ledger)])


def ledger_horizon(now: datetime, rules: Rules) -> datetime:
    """The oldest access time a caller must load for the ledger it passes the planner."""
    return now - rules.span


def backoff_delay(failures: int, rules: Rules) -> timedelta:
    """The wait after ``failures`` consecutive failures (at least 1): doubling, capped."""
    doublings = min(max(failures, 1) - 1, 32)  # beyond 32 the cap binds for any sane base
    return min(rules.backoff_base * (1 << doublings), rules.interval)


# Not cached: a tick plans each due token once (again only when a pick touches its accounts),
# and the token falls due again hours later, long after a bounded cache has let its keys go
# once there are 100,000 tokens or more: a daemon's full cache bought few hits and cost its
# bookkeeping at every call. One string a key (parts joined by ':'): cheaper to hash than a
# tuple of parts.
def _hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _fraction_us(micros: int, key: str) -> int:
    """The hashed fraction of a span of ``micros`` microseconds, in microseconds."""
    return _hash(key) % micros if micros > 0 else 0


def phase(token_id: str, rules: Rules) -> timedelta:
    """The token's offset on the refresh grid, within one interval; stable for a token id."""
    return timedelta(microseconds=_fraction_us(rules.interval // _MICRO, f"phase:{token_id}"))


@dataclass(frozen=True, slots=True)
class _Grid:
    """The rules' constants the planning of one token uses, derived once per call of
    :func:`plan` or :func:`decide_due` rather than once per use (a tick plans hundreds)."""

    interval_us: int
    jitter_us: int
    half: timedelta
    span: timedelta
    final_margin: timedelta


def _grid(rules: Rules) -> _Grid:
    interval = rules.interval
    return _Grid(
        interval // _MICRO, rules.jitter // _MICRO, interval / 2, rules.span, rules.final_margin
    )


def _next_slot(token_id: str, not_before: datetime, grid: _Grid) -> datetime:
    # In whole microseconds: the same grid as timedelta arithmetic gives, at a fraction of the
    # cost (a tick plans hundreds of tokens).
    interval, jitter = grid.interval_us, grid.jitter_us
    offset = _hash(f"phase:{token_id}") % interval
    floor = (not_before - _EPOCH) // _MICRO
    k = (floor - offset) // interval
    at = offset + interval * k + _fraction_us(jitter, f"jitter:{token_id}:{k}")
    if at < floor:
        # Slot k starts at or before not_before; its jitter may still carry it past, else the
        # next one is the first.
        k += 1
        at = offset + interval * k + _fraction_us(jitter, f"jitter:{token_id}:{k}")
    # Positional: a third cheaper than timedelta(microseconds=...), and a tick builds hundreds.
    return _EPOCH + timedelta(0, 0, at)


def _end(token: TokenPlanInput) -> tuple[datetime, Reason]:
    if token.refresh_until is not None and token.refresh_until < token.expires_at:
        return token.refresh_until, Reason.ENDED
    return token.expires_at, Reason.EXPIRED


def _account_times(
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    accounts: frozenset[str],
    since: datetime,
    own: TokenPlanInput | None = None,
) -> dict[str, list[datetime]]:
    """Each of ``accounts``' access times after ``since``, ascending; ``own``'s accounts come
    from its input, not from ``accounts_of``."""
    times: dict[str, list[datetime]] = {account: [] for account in accounts}
    if not ledger:
        return times  # most due tokens: nothing of theirs counts now
    own_id = None if own is None else own.token_id
    # A token's accesses share its reach: each token's is looked up once.
    shared: dict[str, frozenset[str]] = {}
    for access in ledger:
        if access.at <= since:
            continue
        token_id = access.token_id
        hit = shared.get(token_id)
        if hit is None:
            known = own.accounts if own is not None and token_id == own_id else None
            if known is None:
                known = accounts_of.get(token_id, _NONE)
            hit = reach(token_id, known) & accounts
            shared[token_id] = hit
        for account in hit:
            times[account].append(access.at)
    for values in times.values():
        values.sort()
    return times


def _usage(account: str, counted: list[datetime], rules: Rules, span: timedelta) -> Usage:
    used = len(counted)
    # A token whose accounts are unknown (its first import failed) may share a bank account
    # with another token unseen: one access a window bounds what it can add to that account,
    # and the import that follows usually reveals its accounts.
    limit = 1 if account.startswith(_PSEUDO_PREFIX) else rules.refreshes_per_day
    if not counted:
        return Usage(account, 0, limit, None)
    return Usage(account, used, limit, counted[max(0, used - limit)] + span)


def _usages(
    accounts: frozenset[str],
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    now: datetime,
    rules: Rules,
) -> tuple[Usage, ...]:
    span = rules.span
    times = _account_times(ledger, accounts_of, accounts, now - span)
    return tuple(_usage(account, times[account], rules, span) for account in sorted(accounts))


def _room_at(usages: tuple[Usage, ...]) -> datetime | None:
    """When every full window has room again (no new accesses assumed); None if none is full."""
    frees = [u.next_free_at for u in usages if u.full and u.next_free_at is not None]
    return max(frees, default=None)


def window_usage(
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    account: str,
    now: datetime,
    rules: Rules,
) -> Usage:
    """One account's rolling window at ``now``.

    Args:
        ledger: reuse accesses since :func:`ledger_horizon` of the tokens reaching ``account``.
        accounts_of: those tokens' accounts (a token missing or with none: its pseudo-account).
        account: an IBAN or a :func:`pseudo_account`.
        now: the current time (see :func:`effective_now`).
        rules: the planner's tunables.

    Returns:
        Accesses counted, the limit and when the next one frees.
    """
    now = effective_now(now, ledger)
    (usage,) = _usages(frozenset({account}), ledger, accounts_of, now, rules)
    return usage


def _now(token: TokenPlanInput, now: datetime) -> datetime:
    """``now`` (already :func:`effective_now` of the ledger), never before the last refresh."""
    last = token.last_refresh_at
    return now if last is None or last <= now else last


def plan(
    token: TokenPlanInput,
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    rules: Rules,
    now: datetime,
) -> Plan:
    """The token's next unattended refresh.

    Args:
        token: the token to plan.
        ledger: reuse accesses since :func:`ledger_horizon` of every token sharing an account
            with this one (this one included).
        accounts_of: those tokens' accounts; this token's own come from ``token.accounts``.
        rules: the planner's tunables.
        now: the current time.

    Returns:
        When to refresh (never before the effective now; due when ``at <= now``) and why, or
        ``at=None`` with ``expired``/``ended`` when no refresh is left; plus every window the
        token's accesses count against.
    """
    return _plan(token, ledger, accounts_of, rules, _grid(rules), effective_now(now, ledger))


def _plan(
    token: TokenPlanInput,
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    rules: Rules,
    grid: _Grid,
    now: datetime,
) -> Plan:
    """:func:`plan` with the rules' constants derived already and ``now`` effective for
    ``ledger``."""
    accounts = reach(token.token_id, token.accounts)
    now = _now(token, now)
    span = grid.span
    times = _account_times(ledger, accounts_of, accounts, now - span, token)
    usages = tuple(_usage(account, times[account], rules, span) for account in sorted(accounts))
    end, end_reason = _end(token)
    if now >= end:
        return Plan(None, end_reason, usages)
    base = token.last_refresh_at or token.created_at
    final_jitter = _fraction_us(grid.jitter_us, f"final:{token.token_id}")
    final_at = end - grid.final_margin - timedelta(0, 0, final_jitter)
    if token.failures > 0:
        at, reason = base + backoff_delay(token.failures, rules), Reason.BACKOFF
    elif base >= final_at:
        return Plan(None, end_reason, usages)  # the final harvest is done
    else:
        half = grid.half
        slot = _next_slot(token.token_id, base + half, grid)
        if slot < final_at - half and not _blocks_final(slot, final_at - span, times, rules):
            at, reason = slot, Reason.SCHEDULED
        else:
            at, reason = final_at, Reason.FINAL
    deferred = token.upstream_deferred_until
    if deferred is not None and deferred > at:
        at, reason = deferred, Reason.UPSTREAM_LIMIT
    room = _room_at(usages)
    if room is not None and room > at:
        at, reason = room, Reason.QUOTA
    at = max(at, now)
    if at >= end:
        return Plan(None, end_reason, usages)
    return Plan(at, reason, usages)


def _blocks_final(
    slot: datetime, since: datetime, times: Mapping[str, list[datetime]], rules: Rules
) -> bool:
    """Whether a refresh at ``slot`` would leave some window full at the final harvest, whose
    window starts at ``since`` (the final's time less the span).

    The final replaces such slots: the freshest data at the end is worth more than one more
    refresh a few hours before it.
    """
    if slot <= since:
        return False
    return any(
        sum(1 for at in counted if at > since) + 1 >= rules.refreshes_per_day
        for counted in times.values()
    )


def may_refresh_now(
    token: TokenPlanInput,
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    rules: Rules,
    now: datetime,
) -> tuple[bool, datetime | None]:
    """Whether an on-demand refresh may be sent now.

    Allowed iff the token has not ended, no upstream deferral is pending and every account's
    window has room now. The schedule and back-off do not apply: a person asked.

    Returns:
        ``(True, None)`` when allowed; ``(False, t)`` with the next possible time; ``(False,
        None)`` when no refresh is possible before the token ends.
    """
    accounts = reach(token.token_id, token.accounts)
    now = _now(token, effective_now(now, ledger))
    end, _ = _end(token)
    span = rules.span
    times = _account_times(ledger, accounts_of, accounts, now - span, token)
    usages = tuple(_usage(account, times[account], rules, span) for account in sorted(accounts))
    at = max(now, _room_at(usages) or now)
    if token.upstream_deferred_until is not None:
        at = max(at, token.upstream_deferred_until)
    if at >= end:
        return False, None
    if at <= now:
        return True, None
    return False, at


@dataclass(frozen=True, slots=True)
class DuePicks:
    """A tick's decisions: the refreshes to send now, and the plan of every other candidate.

    Attributes:
        picked: one access per token to refresh now, at the time to record in the ledger.
        plans: per candidate not picked, its plan against the ledger as given (this tick's
            picks not counted: the next tick re-plans it against the ledger they leave).
    """

    picked: tuple[Access, ...]
    plans: Mapping[str, Plan]


def decide_due(
    tokens: Sequence[TokenPlanInput],
    ledger: Sequence[Access],
    accounts_of: Mapping[str, frozenset[str]],
    rules: Rules,
    now: datetime,
) -> DuePicks:
    """The refreshes to send now, each re-planned after those picked before it, and the plan
    of every candidate left.

    Tokens are taken in order of their planned time (then id); each due one adds an access at
    the effective now to a working ledger, so shared accounts are never over-committed within
    one tick. Each token is planned once, and again only when a token picked before it reaches
    one of its accounts. Cost: tokens x their part of the ledger, so pass only tokens whose
    stored next time has come.

    Args:
        tokens: candidate tokens.
        ledger: reuse accesses since :func:`ledger_horizon` of every token sharing an account
            with a candidate.
        accounts_of: those tokens' accounts (candidates' own come from their input).
        rules: the planner's tunables.
        now: the current time.

    Returns:
        The picks and the plans of the others.
    """
    mapping = dict(accounts_of)
    mapping.update({token.token_id: token.accounts for token in tokens})
    working = LedgerIndex(ledger, mapping)
    now = effective_now(now, ledger)
    far = datetime.max.replace(tzinfo=UTC)
    grid = _grid(rules)

    def replan(token: TokenPlanInput) -> Plan:
        return _plan(token, working.relevant(token.token_id), mapping, rules, grid, now)

    first = {token.token_id: replan(token) for token in tokens}
    # Accounts an access picked so far counts against: a token reaching none of them keeps
    # the plan it had before any pick.
    touched: set[str] = set()
    picked: list[Access] = []
    for token in sorted(tokens, key=lambda t: (first[t.token_id].at or far, t.token_id)):
        own = reach(token.token_id, token.accounts)
        current = replan(token) if own & touched else first[token.token_id]
        if current.at is not None and current.at <= now:
            access = Access(token.token_id, now)
            working.add(access)
            picked.append(access)
            touched |= own
    chosen = {access.token_id for access in picked}
    plans = {token_id: p for token_id, p in first.items() if token_id not in chosen}
    return DuePicks(tuple(picked), plans)


class LedgerIndex:
    """A ledger grouped by token, answering which accesses can count for one token: its own
    and those of every token sharing an account with it. Planning a token against that part
    gives the plan the whole ledger gives (the rest never reaches its accounts), as long as
    ``now`` is at least :func:`effective_now` of the whole ledger."""

    def __init__(self, ledger: Sequence[Access], accounts_of: Mapping[str, frozenset[str]]):
        self._accounts_of = accounts_of
        self._by_token: dict[str, list[Access]] = {}
        self._tokens_of: dict[str, set[str]] = {}
        for token_id, accounts in accounts_of.items():
            self._index_token(token_id, accounts)
        for access in ledger:
            self.add(access)

    def _index_token(self, token_id: str, accounts: frozenset[str]) -> None:
        for account in reach(token_id, accounts):
            self._tokens_of.setdefault(account, set()).add(token_id)

    def add(self, access: Access) -> None:
        """Count ``access`` from now on."""
        if access.token_id not in self._by_token and access.token_id not in self._accounts_of:
            self._index_token(access.token_id, frozenset())
        self._by_token.setdefault(access.token_id, []).append(access)

    def relevant(self, token_id: str) -> list[Access]:
        """The accesses that can count against ``token_id``'s accounts."""
        accounts = reach(token_id, self._accounts_of.get(token_id, frozenset()))
        related = {token_id}
        for account in accounts:
            related |= self._tokens_of.get(account, set())
        return [access for t in related for access in self._by_token.get(t, ())]
