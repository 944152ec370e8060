"""Which PostgreSQL errors are waited out, which retried, and which are bugs.

The error classes themselves are the store's own (shared with SQLite): a caller handles
``StorageUnavailable`` the same way whichever backend raised it.
"""

from __future__ import annotations

from typing import Literal

import psycopg

__all__ = ["Verdict", "verdict"]

Verdict = Literal["unavailable", "retry"]

# Connection exceptions (08), insufficient resources (53: disk full, out of memory, too many
# connections), and the server shutting down or starting up (57P01-57P03).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})
# A serialization failure or a deadlock: the whole transaction may simply run again.
_RETRY_STATES = frozenset({"40001", "40P01"})


def verdict(exc: BaseException) -> tuple[Verdict, str] | None:
    """What ``exc`` means for the transaction that raised it, with a short reason that names
    the SQLSTATE only (libpq's own text may carry host names and user names).

    Returns:
        ``("unavailable", reason)`` when the database cannot be reached or cannot take the
        write now (the change was not stored and may succeed later), ``("retry", reason)``
        when the transaction lost a race and may run again at once, ``None`` otherwise.
    """
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate
    if state in _RETRY_STATES:
        return "retry", f"SQLSTATE {state}"
    if state is not None and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES):
        return "unavailable", f"PostgreSQL unavailable (SQLSTATE {state})"
    # No SQLSTATE: libpq found no server, the connection broke, or the pool gave none in time.
    if state is None and isinstance(exc, psycopg.OperationalError):
        return "unavailable", "PostgreSQL unavailable (no connection)"
    return None
