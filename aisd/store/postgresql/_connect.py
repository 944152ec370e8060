"""Connections to PostgreSQL: the libpq URL, the password, and aisd's session settings."""

from __future__ import annotations

import re
from typing import Any

from aisd.settings import check_database_url

__all__ = ["SESSION_OPTIONS", "connection_kwargs"]

# Every session aisd opens:
# - idle_in_transaction_session_timeout: a daemon frozen (SIGSTOP, a stalled VM) inside a
#   transaction would otherwise hold its locks, and every waiter, until it is resumed;
# - client_connection_check_interval: a query whose client is gone (a cancelled statement, a
#   killed daemon) stops within a second instead of running to its end;
# - statement_timeout: writes are shielded from cancellation, so nothing may wait forever.
SESSION_OPTIONS = (
    "-c idle_in_transaction_session_timeout=5000"
    " -c client_connection_check_interval=1000"
    " -c statement_timeout=30000"
)

# What a daemon's name may hold: it goes into libpq's space-separated options unquoted.
_ORIGIN = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def connection_kwargs(
    url: str, *, password: str | None, origin: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``psycopg.connect`` for ``url``.

    Args:
        url: a libpq URL without a password (checked again here: it may come from a caller
            other than the settings).
        password: the password, from ``$CREDENTIALS_DIRECTORY/aisd_database_password``; None
            lets libpq use ``PGPASSFILE`` / ``~/.pgpass`` or another method.
        origin: the daemon's name, set as ``aisd.origin`` on its sessions: the events they
            append carry it (``events.origin``), so that only this daemon logs them.
    """
    check_database_url(url)
    if origin is not None and not _ORIGIN.fullmatch(origin):
        raise ValueError("a daemon's name is letters, digits and . _ : - only")
    options = SESSION_OPTIONS if origin is None else f"{SESSION_OPTIONS} -c aisd.origin={origin}"
    kwargs: dict[str, Any] = {
        "conninfo": url,
        "application_name": "aisd",
        "options": options,
        "connect_timeout": 5,
        # A host cut off from the database learns so within seconds, not the kernel's hours.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10000,
    }
    if password is not None:
        kwargs["password"] = password
    return kwargs
