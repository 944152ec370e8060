"""Errors the store raises; messages name ids and states, never a secret."""

from __future__ import annotations

__all__ = ["ConflictError", "DatabaseTooNewError", "NotFoundError", "StoreError"]


class StoreError(Exception):
    """Base of the store's own errors."""


class NotFoundError(StoreError, LookupError):
    """An import or token id that is not stored."""


class ConflictError(StoreError):
    """The change does not fit the stored state (e.g. a refresh for a revoked token)."""


class DatabaseTooNewError(StoreError):
    """The database was migrated by a newer aisd; opening it could corrupt it."""
