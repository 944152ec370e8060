"""Durable state: the :class:`Store` interface, its record values, the SQLite backend and the
PostgreSQL one (:mod:`aisd.store.postgresql`)."""

from __future__ import annotations

from aisd.phases import ImportPhase
from aisd.store._data_records import FeedPage, FeedTransaction, ForgetOutcome
from aisd.store._health import StorageHealth
from aisd.store._interface import Store
from aisd.store._records import (
    AccessKind,
    Claim,
    ConsentIn,
    EventRecord,
    ImportError_,
    ImportJob,
    ImportKind,
    ImportRecord,
    ImportState,
    LedgerEntry,
    MergeStats,
    NewEvent,
    PlanWrite,
    QuotaAnswer,
    QuotaRule,
    QuotaView,
    StepWrite,
    StoredTransaction,
    SubmitOutcome,
    TickOutcome,
    TickPlanner,
    TokenOutcome,
    TokenRecord,
    TokenState,
)
from aisd.store._select import open_configured_store
from aisd.store.sqlite import (
    ConflictError,
    DatabaseTooNewError,
    LeaseLost,
    NotFoundError,
    SqliteStore,
    StorageUnavailable,
    StoreError,
    open_store,
)

__all__ = [
    "AccessKind",
    "Claim",
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
    "LeaseLost",
    "LedgerEntry",
    "MergeStats",
    "NewEvent",
    "NotFoundError",
    "PlanWrite",
    "QuotaAnswer",
    "QuotaRule",
    "QuotaView",
    "SqliteStore",
    "StepWrite",
    "StorageHealth",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "StoredTransaction",
    "SubmitOutcome",
    "TickOutcome",
    "TickPlanner",
    "TokenOutcome",
    "TokenRecord",
    "TokenState",
    "open_configured_store",
    "open_store",
]
