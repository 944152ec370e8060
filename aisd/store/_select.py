"""The backend the settings choose: PostgreSQL when ``AISD_DATABASE_URL`` is set, else SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aisd.settings import Settings
from aisd.store._interface import Store
from aisd.store.sqlite import open_store

__all__ = ["open_configured_store"]


@asynccontextmanager
async def open_configured_store(settings: Settings) -> AsyncIterator[Store]:
    """Open (and migrate) the configured store; closed on exit.

    Raises:
        DatabaseTooNewError: the database was migrated by a newer aisd.
        StorageUnavailable: the PostgreSQL server cannot be reached.
    """
    if settings.database_url is None:
        async with open_store(settings.db_path) as sqlite_store:
            yield sqlite_store
        return
    # Imported only here: psycopg and its pool take a tenth of a second to import, which every
    # start of an SQLite daemon, and every CLI command, would pay for nothing.
    from aisd.store.postgresql import open_postgres_store

    password = settings.database_password
    store = await open_postgres_store(
        settings.database_url.get_secret_value(),
        password=None if password is None else password.get_secret_value(),
    )
    try:
        yield store
    finally:
        await store.close()
