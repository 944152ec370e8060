"""Errors the store raises; messages name ids and states, never a secret."""

from __future__ import annotations

import errno
import sqlite3

__all__ = [
    "ConflictError",
    "DatabaseTooNewError",
    "LeaseLost",
    "NotFoundError",
    "StorageUnavailable",
    "StoreError",
    "storage_failure",
]

# SQLite's own wording (the start of the message) for a database that cannot take writes now
# but may later: the disk filled up, the file or its directory turned read-only, or the
# operating system refused the write (a file size limit reads as an I/O error).
_UNAVAILABLE_MESSAGES = (
    "database or disk is full",
    "attempt to write a readonly database",
    "disk I/O error",
    "unable to open database file",
)
_UNAVAILABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT})


class StoreError(Exception):
    """Base of the store's own errors."""


class NotFoundError(StoreError, LookupError):
    """An import or token id that is not stored."""


class ConflictError(StoreError):
    """The change does not fit the stored state (e.g. a refresh for a revoked token)."""


class LeaseLost(ConflictError):
    """A fenced write changed no row: the import is no longer claimed by this claimer at this
    epoch (another process adopted it, or it ended meanwhile). The step stops before anything
    more is sent upstream for it."""


class DatabaseTooNewError(StoreError):
    """The database was migrated by a newer aisd; opening it could corrupt it."""


class StorageUnavailable(StoreError):
    """The database refused a write for a reason outside aisd (disk full, read-only file, I/O
    error): nothing of the change was stored, and the same change may succeed later.

    Attributes:
        reason: SQLite's or the OS's short wording, e.g. ``"database or disk is full"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"storage unavailable: {reason}")
        self.reason = reason


def storage_failure(exc: BaseException) -> str | None:
    """The reason ``exc`` says the database cannot be written now, or ``None`` for any other
    error (a bug, a constraint, a corrupt file are not waited out)."""
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        return next((m for m in _UNAVAILABLE_MESSAGES if message.startswith(m)), None)
    if isinstance(exc, OSError) and exc.errno in _UNAVAILABLE_ERRNOS:
        return errno.errorcode[exc.errno]
    return None
