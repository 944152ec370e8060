"""Retention: merged transactions and raw replies older than the operator keeps.

The daemon calls :func:`housekeep` periodically (hourly); each run is idempotent and cheap when
there is nothing to purge. The cut-offs are pure functions of ``now`` and the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import structlog

from aisd.store import Store

__all__ = ["HousekeepingReport", "housekeep", "raw_reply_cutoff", "transaction_cutoff"]

log = structlog.get_logger("aisd.housekeeping")


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    """What one run purged (None: that retention is off)."""

    transactions_before: date | None
    transactions_purged: int
    raw_replies_before: datetime | None
    raw_replies_purged: int


def transaction_cutoff(now: datetime, retention_days: int | None) -> date | None:
    """The first ``transactionOn`` kept: transactions dated before it are purged.

    Args:
        now: the current time (UTC).
        retention_days: days of transactions kept, counted back from today; None keeps all.

    Returns:
        The cut-off date, or None when retention is off.
    """
    if retention_days is None:
        return None
    return now.date() - timedelta(days=retention_days)


def raw_reply_cutoff(now: datetime, raw_retention_days: int) -> datetime | None:
    """Raw replies of imports finished before this time are purged; None when 0 (keep all)."""
    if raw_retention_days <= 0:
        return None
    return now - timedelta(days=raw_retention_days)


async def housekeep(
    store: Store, *, now: datetime, retention_days: int | None, raw_retention_days: int
) -> HousekeepingReport:
    """Purge what retention says to and log one line with the counts.

    Args:
        store: the daemon's store.
        now: the current time.
        retention_days: ``AISD_RETENTION_DAYS``: merged transactions dated more than this many
            days ago are deleted; None keeps them.
        raw_retention_days: ``AISD_RAW_RETENTION_DAYS``: raw replies of imports finished more
            than this many days ago are deleted; 0 keeps them.

    Returns:
        The cut-offs applied and how many rows went.
    """
    tx_before = transaction_cutoff(now, retention_days)
    raw_before = raw_reply_cutoff(now, raw_retention_days)
    purged = await store.purge(transactions_before=tx_before, raw_before=raw_before)
    transactions, raw = purged.transactions, purged.raw_replies
    report = HousekeepingReport(tx_before, transactions, raw_before, raw)
    log.info(
        "housekeeping.done",
        transactionsPurged=transactions,
        transactionsBefore=tx_before.isoformat() if tx_before else None,
        rawRepliesPurged=raw,
        rawRepliesBefore=raw_before.isoformat() if raw_before else None,
    )
    return report
