"""Values of the operations side of the store: webhook cursors and their backlog."""

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
        backlog: the events it still has to receive, when asked for.
    """

    url: str
    cursor: int
    attempts: int
    next_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    backlog: WebhookBacklog | None = None


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """Events after a cursor that an endpoint still has to receive."""

    events: int
    oldest_at: datetime | None
