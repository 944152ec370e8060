"""Shared test configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "kontomatik"


@pytest.fixture
def anyio_backend() -> str:
    """aiosqlite and APScheduler 3's AsyncIOScheduler are asyncio-only."""
    return "asyncio"


@pytest.fixture
def fixtures_dir() -> Path:
    """The real Kontomatik replies, copied in with their licence."""
    return FIXTURES
