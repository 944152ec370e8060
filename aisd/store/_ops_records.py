"""Values of the operations side of the store: webhook cursors and the counts /metrics reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WebhookCursor:
    """Where delivery to one webhook endpoint stands.

    Attributes:
        url: the endpoint as configured (it may hold credentials: show it through a label).
        cursor: the last event id delivered, or passed over by the type filter.
        attempts: failed attempts at the event after the cursor.
        next_attempt_at: when that event is tried again (None: now).
        last_success_at: the last 2xx answer.
        last_error: what the last failed attempt got (status or transport error).
        last_error_at: when.
    """

    url: str
    cursor: int
    attempts: int
    next_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """Events after a cursor that an endpoint still has to receive."""

    events: int
    oldest_at: datetime | None


@dataclass(frozen=True, slots=True)
class OpsCounts:
    """Counts /metrics reads at each scrape, each served by an index.

    Attributes:
        open_imports: ``{(kind, state): n}`` of queued and running imports.
        tokens_expiring: active tokens whose access ends within the window asked for.
        tokens_stale: active tokens without a successful import within the age asked for.
    """

    open_imports: dict[tuple[str, str], int]
    tokens_expiring: int
    tokens_stale: int
