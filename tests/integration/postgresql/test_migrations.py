"""PostgreSQL migrations: two daemons starting together migrate once."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from aisd.store.postgresql import LATEST_VERSION, connection_kwargs, migrate
from aisd.store.sqlite import DatabaseTooNewError
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.anyio


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(**connection_kwargs(url, password=None))


def _empty_database(server: PostgresServer, name: str) -> str:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


async def test_two_daemons_starting_together_migrate_once(
    postgres_server: PostgresServer,
) -> None:
    url = _empty_database(postgres_server, "aisd_race_migrate")
    versions: list[int] = []

    async def start() -> None:
        async with await _connect(url) as conn:
            versions.append(await migrate(conn))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    assert versions == [LATEST_VERSION] * 4
    async with await _connect(url) as conn:
        cursor = await conn.execute("SELECT version FROM aisd_schema_versions ORDER BY version")
        assert [row[0] for row in await cursor.fetchall()] == list(range(1, LATEST_VERSION + 1))
        # Each version once, and the schema whole: the seed rows were inserted once.
        cursor = await conn.execute("SELECT count(*) FROM budget")
        assert await cursor.fetchone() == (1,)


async def test_a_migrated_database_is_left_alone(postgres_url: str) -> None:
    async with await _connect(postgres_url) as conn:
        assert await migrate(conn) == LATEST_VERSION
        cursor = await conn.execute("SELECT count(*) FROM aisd_schema_versions")
        assert await cursor.fetchone() == (LATEST_VERSION,)


async def test_a_database_from_a_newer_aisd_is_refused(postgres_url: str) -> None:
    async with await _connect(postgres_url) as conn:
        await conn.execute(
            "INSERT INTO aisd_schema_versions (version, name) VALUES (%s, 'future')",
            (LATEST_VERSION + 1,),
        )
        await conn.commit()
        with pytest.raises(DatabaseTooNewError):
            await migrate(conn)
