"""Durable state: the :class:`Store` interface, its record values and the SQLite backend."""

from __future__ import annotations

from aisd.store._data_records import FeedPage, FeedTransaction, ForgetOutcome
from aisd.store._health import StorageHealth
from aisd.store._interface import Store
from aisd.store._ops_records import OpsCounts, WebhookBacklog, WebhookCursor
from aisd.store._records import (
    AccessKind,
    ConsentIn,
    EventRecord,
    ImportError_,
    ImportJob,
    ImportKind,
    ImportPhase,
    ImportRecord,
    ImportState,
    LedgerEntry,
    MergeStats,
    NewEvent,
    StoredConsent,
    StoredTransaction,
    SubmitOutcome,
    TokenRecord,
    TokenState,
)
from aisd.store.sqlite import (
    ConflictError,
    DatabaseTooNewError,
    NotFoundError,
    SqliteStore,
    StorageUnavailable,
    StoreError,
    open_store,
)

__all__ = [
    "AccessKind",
    "ConflictError",
    "ConsentIn",
    "DatabaseTooNewError",
    "EventRecord",
    "FeedPage",
    "FeedTransaction",
    "ForgetOutcome",
    "ImportError_",
    "ImportJob",
    "ImportKind",
    "ImportPhase",
    "ImportRecord",
    "ImportState",
    "LedgerEntry",
    "MergeStats",
    "NewEvent",
    "NotFoundError",
    "OpsCounts",
    "SqliteStore",
    "StorageHealth",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "StoredConsent",
    "StoredTransaction",
    "SubmitOutcome",
    "TokenRecord",
    "TokenState",
    "WebhookBacklog",
    "WebhookCursor",
    "open_store",
]
