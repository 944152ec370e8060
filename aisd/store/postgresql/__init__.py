"""The PostgreSQL backend of the store: several daemons on one database, SQL in ``.sql`` files,
numbered migrations under an advisory lock."""

from __future__ import annotations

from aisd.store.postgresql._connect import SESSION_OPTIONS, connection_kwargs
from aisd.store.postgresql._copy import copy_sqlite
from aisd.store.postgresql._errors import verdict
from aisd.store.postgresql._migrate import LATEST_VERSION, migrate
from aisd.store.postgresql._store import PostgresStore, open_postgres_store

__all__ = [
    "LATEST_VERSION",
    "SESSION_OPTIONS",
    "PostgresStore",
    "connection_kwargs",
    "copy_sqlite",
    "migrate",
    "open_postgres_store",
    "verdict",
]
