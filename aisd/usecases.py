"""What the daemon does on request, as plain functions of the store and the refresher.

The JSON-RPC methods (:mod:`aisd.rpc.methods`, :mod:`aisd.rpc.methods_data`) validate params,
call one of these and shape the answer; ``aisd simulate`` submits its consents through the same
:func:`submit_consent`. Failures are domain exceptions (``LookupError`` for what does not
exist, :class:`ConsentConflict`, :class:`NotRevoked`, the store's ``ConflictError``); mapping
them to error codes is the RPC layer's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from aisd import billing
from aisd.intake import differing_field
from aisd.refresh import RevokeFailed
from aisd.store import ConsentIn, Store, SubmitOutcome, TokenState

__all__ = [
    "ConsentConflict",
    "Forgotten",
    "NotRevoked",
    "Revoker",
    "billing_forecast",
    "billing_report",
    "forget_owner",
    "month_bounds",
    "revoke_tokens",
    "submit_consent",
]

log = structlog.get_logger("aisd.data")


class Revoker(Protocol):
    """Revokes a token upstream and ends it locally (:class:`aisd.refresh.Refresher`)."""

    async def revoke(self, token_id: str, *, reason: str) -> TokenState:
        """The token's state afterwards; raises ``LookupError`` or ``RevokeFailed``."""
        ...


class ConsentConflict(Exception):
    """A repeated ``sessionId`` differs from the stored consent in ``field`` (its param name);
    the stored consent's ids are never handed out for it."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class NotRevoked(Exception):
    """Upstream did not confirm a token's revocation; nothing after it was done.

    Attributes:
        token_id: the token whose revocation failed.
        error: upstream's error name (no secret in it).
    """

    def __init__(self, token_id: str, error: str) -> None:
        super().__init__(error)
        self.token_id = token_id
        self.error = error


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What :func:`forget_owner` did: tokens revoked upstream and rows erased."""

    tokens_revoked: int
    rows_deleted: int


async def submit_consent(
    store: Store,
    consent: ConsentIn,
    *,
    now: datetime,
    history_days: int,
    access: timedelta,
) -> SubmitOutcome:
    """Store a consent with its first import (``history_days`` back) and, with multiple
    access, its token valid for ``access``; an exact repeat of a stored ``sessionId`` returns
    the stored ids with ``created=False``. The caller wakes the pipeline when ``created``.

    Raises:
        ConsentConflict: the ``sessionId`` is stored with another owner or secret.
    """
    outcome = await store.submit_consent(
        consent,
        now=now,
        since=now.date() - timedelta(days=history_days),
        expires_at=now + access,
    )
    if outcome.stored is not None:
        differs = differing_field(consent, outcome.stored)
        if differs is not None:
            raise ConsentConflict(differs)
    return outcome


async def revoke_tokens(
    store: Store,
    revoker: Revoker,
    *,
    token_id: str | None = None,
    owner_external_id: str | None = None,
) -> list[tuple[str, TokenState]]:
    """Revoke one token, or every token of an owner; returns each token's state afterwards.

    Exactly one of ``token_id`` and ``owner_external_id`` is given.

    Raises:
        LookupError: no such token (or the owner has none).
        NotRevoked: upstream did not confirm a revocation; the tokens after it are untouched.
    """
    assert (token_id is None) != (owner_external_id is None), "one of token_id and owner"
    if token_id is not None:
        targets = [token_id]
    else:
        targets = [t.token_id for t in await store.list_tokens(owner_external_id=owner_external_id)]
    if not targets or not await store.list_tokens(token_ids=targets):
        raise LookupError("token not found")
    results = []
    for target in targets:
        try:
            state = await revoker.revoke(target, reason="revoked on request")
        except RevokeFailed as exc:
            raise NotRevoked(target, str(exc)) from None
        results.append((target, state))
    return results


async def forget_owner(
    store: Store, revoker: Revoker, owner_external_id: str, *, now: datetime
) -> Forgotten:
    """Revoke every active token of the owner upstream, then erase the owner.

    Nothing is erased unless every revocation was confirmed.

    Raises:
        NotRevoked: a revocation failed; nothing was deleted.
        LookupError: the owner is unknown.
        ConflictError: an import of the owner is still queued or running.
    """
    revoked = 0
    for token in await store.list_tokens(owner_external_id=owner_external_id):
        if token.state != TokenState.ACTIVE:
            continue
        try:
            state = await revoker.revoke(token.token_id, reason="owner forgotten")
        except LookupError:
            continue
        except RevokeFailed as exc:
            raise NotRevoked(token.token_id, str(exc)) from None
        revoked += state == TokenState.REVOKED
    outcome = await store.forget_owner(owner_external_id, now=now)
    # No owner id here: the log outlives the erasure.
    log.info(
        "owner.forgotten",
        eventId=outcome.event_id,
        tokenIds=list(outcome.token_ids),
        tokensRevoked=revoked,
        rowsDeleted=outcome.rows_deleted,
    )
    if not outcome.compacted:
        log.warning("owner.forget_wal_busy", eventId=outcome.event_id)
    return Forgotten(tokens_revoked=revoked, rows_deleted=outcome.rows_deleted)


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The UTC month ``[start, end)``."""
    start = datetime(year, month, 1, tzinfo=UTC)
    if month == 12:
        return start, start.replace(year=year + 1, month=1)
    return start, start.replace(month=month + 1)


async def billing_report(store: Store, year: int, month: int, *, now: datetime) -> billing.Report:
    """The billing report of a month, counting only cycles ended by ``now``."""
    start, end = month_bounds(year, month)
    tokens, imports = await store.billing_inputs(start=start, end=end)
    return billing.report(tokens, imports, year, month, now)


async def billing_forecast(
    store: Store, months: int, *, now: datetime, refreshes_per_day: int
) -> list[billing.MonthForecast]:
    """The next ``months`` months' expected cycles and imports, from this month's start."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    tokens, imports = await store.billing_inputs(start=start)
    return billing.forecast(tokens, now, months, refreshes_per_day, imports)
