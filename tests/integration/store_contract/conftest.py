"""The backend parameter of the store contract: every test here runs on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aisd.store import SqliteStore, open_store

# The PostgreSQL backend joins this list. "sqlite-scratch" is the store ``aisd simulate`` opens:
# the same file, its statements run on the event loop's thread.
BACKENDS = ["sqlite", "sqlite-scratch"]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    name: str = request.param
    return name


@pytest.fixture
async def backend(backend_name: str, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A fresh, empty store of the backend under test."""
    assert backend_name in ("sqlite", "sqlite-scratch")
    scratch = backend_name == "sqlite-scratch"
    async with open_store(tmp_path / "contract.db", scratch=scratch) as store:
        yield store
