"""Shared test configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.postgres_server import PostgresServer, PostgresUnavailable, memory_dir

FIXTURES = Path(__file__).parent / "fixtures" / "kontomatik"

# Hypothesis's per-example deadline and its too-slow health check are timed assertions: on 2
# shared cores running three test workers an example can take seconds. Speed is measured in
# bench/, never asserted; every example still runs, to the same count.
settings.register_profile("aisd", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("aisd")


def pytest_configure(config: pytest.Config) -> None:
    """``tmp_path`` in memory when there is room and no other place was asked for: the
    databases the tests write are thrown away, and on a shared disk their syncs wait on
    everyone else's writes."""
    asked = config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT")
    memory = memory_dir()
    if not asked and "TMPDIR" not in os.environ and memory is not None:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(memory)


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
