"""The backend parameter of the store contract: every test here runs on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from aisd.store import SqliteStore, open_store
from aisd.store.postgresql import open_postgres_store

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    name: str = request.param
    return name


@pytest.fixture
async def backend(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[SqliteStore]:
    """A fresh, empty store of the backend under test."""
    if backend_name == "postgresql":
        # Requested only here, so the SQLite half runs without a PostgreSQL server.
        url: str = request.getfixturevalue("postgres_url")
        pg = await open_postgres_store(url)
        try:
            # Typed as the SQLite store, as the suite is: both implement aisd.store.Store.
            yield cast(SqliteStore, pg)
        finally:
            await pg.close()
        return
    assert backend_name == "sqlite"
    async with open_store(tmp_path / "contract.db") as store:
        yield store
