"""The backend parameter of the store contract: every test here runs on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aisd.store import SqliteStore, open_store
from tests.integration.backends import BACKENDS as STORED
from tests.integration.backends import open_backend

# "sqlite-scratch" is the store ``aisd simulate`` opens: the same file, its statements run on
# the event loop's thread.
BACKENDS = [*STORED, "sqlite-scratch"]


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
    if backend_name == "sqlite-scratch":
        async with open_store(tmp_path / "contract.db", scratch=True) as scratch:
            yield scratch
        return
    async with open_backend(backend_name, tmp_path, request) as store:
        yield store
