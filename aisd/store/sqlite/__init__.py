"""The SQLite backend of the store: one file, WAL, numbered migrations, SQL in ``.sql`` files."""

from __future__ import annotations

from aisd.store.sqlite._errors import (
    ConflictError,
    DatabaseTooNewError,
    LeaseLost,
    NotFoundError,
    StorageUnavailable,
    StoreError,
)
from aisd.store.sqlite._migrate import LATEST_VERSION, migrate
from aisd.store.sqlite._store import SqliteStore, open_store

__all__ = [
    "LATEST_VERSION",
    "ConflictError",
    "DatabaseTooNewError",
    "LeaseLost",
    "NotFoundError",
    "SqliteStore",
    "StorageUnavailable",
    "StoreError",
    "migrate",
    "open_store",
]
