"""Shared test configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, PostgresUnavailable

FIXTURES = Path(__file__).parent / "fixtures" / "kontomatik"


@pytest.fixture
def anyio_backend() -> str:
    """aiosqlite and APScheduler 3's AsyncIOScheduler are asyncio-only."""
    return "asyncio"


@pytest.fixture
def fixtures_dir() -> Path:
    """The real Kontomatik replies, copied in with their licence."""
    return FIXTURES


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session (skipped, with the reason, only when
    this machine has no PostgreSQL server binaries or cannot run them)."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL cannot be had here: {exc}")
    try:
        server.init()
    except PostgresUnavailable as exc:
        server.close()
        pytest.skip(f"PostgreSQL cannot be had here: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, migrated database on the session's server."""
    return postgres_server.new_database()
