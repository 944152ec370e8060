"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration._harness import Env, make_env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """A store, the in-process sandbox and a client, on a fresh database."""
    async for value in make_env(tmp_path):
        yield value
