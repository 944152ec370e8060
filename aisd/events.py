"""The events the daemon appends to its feed, built here, in pure code, from what the domain
knows: every backend records what it is given and never spells an event type or a payload.

Where a payload depends on what only the writing transaction finds out (the merge's counts, the
queued refreshes a token's end fails, the rows an erasure deleted), the backend hands those facts
to the builder here. Also the rules about tokens that decide which events are due: the
``token.expiring`` schedule and the failure of a refresh whose token ended.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from aisd.clock import iso
from aisd.kontomatik._models import CommandFailure, ImportResult
from aisd.store._records import (
    ConsentIn,
    ImportJob,
    MergeStats,
    NewEvent,
    TokenRecord,
    TokenState,
)
from aisd.store._requests import Fail

__all__ = [
    "OWNER_MISMATCH",
    "anonymous_event_data",
    "consent_received",
    "ended_refresh_failure",
    "failed",
    "import_failed",
    "import_started",
    "import_succeeded",
    "owner_forgotten",
    "owner_mismatch_failure",
    "quota_deferred",
    "refresh_paused",
    "refused",
    "success_extras",
    "token_ended",
    "token_expired",
    "token_expiring",
    "token_reauth_required",
    "warning_schedule",
]

OWNER_MISMATCH = "OwnerMismatch"


# -- intake ------------------------------------------------------------------------------------


def consent_received(
    consent: ConsentIn, since: date, token_id: str | None, import_id: str, expires_at: datetime
) -> NewEvent:
    """``consent.received``: a consent was stored and its first import queued."""
    data: dict[str, Any] = {
        "target": consent.target,
        "since": since.isoformat(),
        "multipleAccess": token_id is not None,
    }
    if token_id is not None:
        # With microseconds, as this event has always carried it.
        data["expiresAt"] = expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return NewEvent("consent.received", consent.owner_external_id, token_id, import_id, data)


# -- an import's steps ---------------------------------------------------------------------------


def import_started(job: ImportJob) -> NewEvent:
    """``import.started``: the first Default Import of an import was recorded."""
    return NewEvent(
        "import.started",
        job.owner_external_id,
        job.token_id,
        job.import_id,
        {"kind": job.kind.value},
    )


def import_failed(
    *,
    owner_external_id: str | None,
    token_id: str | None,
    import_id: str,
    failure: CommandFailure,
    polls: int,
) -> NewEvent:
    """``import.failed``: Kontomatik's exception verbatim and the polls made."""
    data = {"errorName": failure.name, "errorMessage": failure.message, "polls": polls}
    return NewEvent("import.failed", owner_external_id, token_id, import_id, data)


def failed(job: ImportJob, failure: CommandFailure, polls: int | None = None) -> Fail:
    """The end of ``job`` as failed with ``failure`` (``polls`` made, the job's by default)."""
    made = job.polls if polls is None else polls
    event = import_failed(
        owner_external_id=job.owner_external_id,
        token_id=job.token_id,
        import_id=job.import_id,
        failure=failure,
        polls=made,
    )
    return Fail(failure, made, event)


def refused(
    job: ImportJob,
    failure: CommandFailure,
    raw: bytes | None,
    *,
    polls: int | None = None,
    owner_echo: str | None = None,
) -> Fail:
    """The end of ``job`` with a reply it must not merge: the reply (gzip-compressed) is kept
    for inspection and the token's refreshes pause (``token.refresh_paused``), so no further
    access is spent on the same answer."""
    return replace(
        failed(job, failure, polls),
        pause_refreshes=True,
        token_event=refresh_paused(job, failure.name),
        refused_reply=raw,
        owner_echo=owner_echo,
    )


def success_extras(result: ImportResult) -> dict[str, Any]:
    """What ``import.succeeded`` says about the reply beyond the merge's counts: its credit
    cards, the accounts and cards cut short upstream (``partialAccounts``: IBANs and card
    keys) and the elements left out as unreadable (``skipped``)."""
    return {
        "creditCards": len(result.credit_cards),
        "partialAccounts": list(result.partial),
        "skipped": len(result.skipped),
    }


def _succeeded(
    job: ImportJob,
    result: ImportResult,
    polls: int,
    now: datetime,
    stats: MergeStats,
    started: datetime,
) -> NewEvent:
    data = {
        "accounts": stats.accounts,
        "transactions": stats.transactions,
        "added": stats.added,
        "modified": stats.modified,
        "removed": stats.removed,
        "polls": polls,
        "durationSeconds": round((now - started).total_seconds(), 3),
    } | success_extras(result)
    return NewEvent("import.succeeded", job.owner_external_id, job.token_id, job.import_id, data)


def import_succeeded(
    job: ImportJob, result: ImportResult, *, polls: int, now: datetime
) -> Callable[[MergeStats, datetime], NewEvent]:
    """``import.succeeded`` once the merge's counts and the import's recorded start are known:
    what the merge did and how long the import took."""
    return partial(_succeeded, job, result, polls, now)


def quota_deferred(job: ImportJob, until: datetime) -> NewEvent:
    """``quota.deferred``: upstream refused a Reuse on the account's limit until ``until``."""
    data = {"reason": "upstream_limit", "nextPossibleAt": iso(until)}
    return NewEvent("quota.deferred", job.owner_external_id, job.token_id, None, data)


def token_reauth_required(job: ImportJob, error_name: str) -> NewEvent:
    """``token.reauth_required``: upstream declared the token dead."""
    data = {"errorName": error_name}
    return NewEvent(
        "token.reauth_required", job.owner_external_id, job.token_id, job.import_id, data
    )


def refresh_paused(job: ImportJob, reason: str) -> NewEvent:
    """``token.refresh_paused``: a refused reply stops the token's refreshes until someone acts."""
    data = {"reason": reason}
    return NewEvent(
        "token.refresh_paused", job.owner_external_id, job.token_id, job.import_id, data
    )


def owner_mismatch_failure() -> CommandFailure:
    """The failure of an import Kontomatik filed under another owner than the consent's."""
    return CommandFailure(
        OWNER_MISMATCH,
        "Kontomatik filed this import under another ownerExternalId than the one "
        "submitted; nothing was merged (give the widget the same ownerExternalId).",
    )


# -- a token's life ------------------------------------------------------------------------------


def token_expired(token: TokenRecord) -> NewEvent:
    """``token.expired``: the token's access ended at ``expiresAt``."""
    data = {"expiresAt": iso(token.expires_at)}
    return NewEvent("token.expired", token.owner_external_id, token.token_id, data=data)


def token_expiring(token: TokenRecord, day: int) -> NewEvent:
    """``token.expiring``: threshold ``day`` (days before ``expiresAt``) has passed."""
    data = {"daysBefore": day, "expiresAt": iso(token.expires_at)}
    return NewEvent("token.expiring", token.owner_external_id, token.token_id, data=data)


def token_ended(token: TokenRecord, state: TokenState, reason: str) -> NewEvent:
    """``token.<state>`` (``token.revoked``): the token left ``active`` for ``reason``."""
    final = TokenState(state)
    if final == TokenState.ACTIVE:
        raise ValueError("a token's end needs a final state")
    data = {"reason": reason}
    return NewEvent(f"token.{final.value}", token.owner_external_id, token.token_id, data=data)


def warning_schedule(
    expires_at: datetime, days: Collection[int], warned: Collection[int], now: datetime
) -> tuple[list[int], datetime | None]:
    """Which ``token.expiring`` thresholds are due and when the next one passes.

    Args:
        expires_at: the token's end.
        days: the thresholds, in days before ``expires_at``.
        warned: thresholds already raised.
        now: the current time.

    Returns:
        The due thresholds (passed, not raised), largest first, and the time the largest
        threshold not raised yet passes (None when every threshold has been raised).
    """
    pending = sorted(set(days) - set(warned), reverse=True)
    due = [day for day in pending if expires_at - timedelta(days=day) <= now]
    return due, (expires_at - timedelta(days=pending[0]) if pending else None)


def ended_refresh_failure(state: TokenState) -> CommandFailure:
    """The failure of a queued refresh whose token has left ``active``: ``TokenRevoked``,
    ``TokenExpired`` or ``TokenReauthRequired``."""
    words = TokenState(state).value.split("_")
    name = "Token" + "".join(word.title() for word in words)
    return CommandFailure(name, f"The token is {state.value}; the refresh was not started.")


# -- erasure -------------------------------------------------------------------------------------

# Event data keys that never hold personal data, as long as their values have these shapes.
_COUNT_KEYS = frozenset(
    {
        "accounts",
        "transactions",
        "added",
        "modified",
        "removed",
        "polls",
        "durationSeconds",
        "day",
        "multipleAccess",
        "skipped",
        "creditCards",
    }
)
_WORD_KEYS = frozenset({"kind", "errorName", "reason"})
_WORD = re.compile(r"[A-Za-z][A-Za-z_. -]{0,63}")


def anonymous_event_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an event's data that says nothing about a person.

    Args:
        data: the event's data as stored.

    Returns:
        Only counts, flags and short enumerated words (import kind, error name, reason); free
        text, IBANs, amounts and lists are dropped.
    """
    return {key: value for key, value in data.items() if _anonymous(key, value)}


def _anonymous(key: str, value: Any) -> bool:
    if key in _COUNT_KEYS:
        return value is None or isinstance(value, bool | int | float)
    return key in _WORD_KEYS and isinstance(value, str) and _WORD.fullmatch(value) is not None


def owner_forgotten(*, rows_deleted: int, token_ids: list[str], events_stripped: int) -> NewEvent:
    """``owner.forgotten``: the audit of an erasure, without personal data."""
    data = {"rowsDeleted": rows_deleted, "tokenIds": token_ids, "eventsStripped": events_stripped}
    return NewEvent("owner.forgotten", data=data)
