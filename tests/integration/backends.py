"""A store of each backend for tests that run on both: SQLite in ``tmp_path``, PostgreSQL on
a fresh database of the session's server (asked for only when that parameter runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest

from aisd.store import SqliteStore, open_store
from aisd.store.postgresql import open_postgres_store

__all__ = ["BACKENDS", "open_backend"]

BACKENDS = ["sqlite", "postgresql"]


@asynccontextmanager
async def open_backend(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[SqliteStore]:
    """A fresh, empty store of backend ``name``.

    Typed as the SQLite store, as the suites that use it are: both implement
    :class:`aisd.store.Store`.
    """
    if name == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        pg = await open_postgres_store(url)
        try:
            yield cast(SqliteStore, pg)
        finally:
            await pg.close()
        return
    assert name == "sqlite"
    async with open_store(tmp_path / "aisd.db") as store:
        yield store
