"""Numbered forward migrations (``migrations/NNNN_name.sql``) for PostgreSQL.

All pending migrations run in one transaction that first takes a transaction-scoped advisory
lock: two daemons starting together serialise there, and the second finds the work done. A
session-level lock would vanish silently with a dropped connection; a transaction-scoped one
ends exactly with the transaction that did the work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

import psycopg

from aisd.store.postgresql._queries import QUERIES as Q
from aisd.store.sqlite._errors import DatabaseTooNewError

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "migrate"]

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_xact_lock's key for migrations: 'aisd' in ASCII.
MIGRATION_LOCK = 0x61697364


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for entry in files("aisd.store.postgresql").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migration numbers must run 1, 2, 3, ... without gaps")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()
LATEST_VERSION: int = MIGRATIONS[-1].version


async def migrate(conn: psycopg.AsyncConnection[Any], *, target: int | None = None) -> int:
    """Bring the database ``conn`` is connected to up to ``target`` (default: the latest).

    Returns:
        The version the database is at afterwards.

    Raises:
        DatabaseTooNewError: the database was migrated by a newer aisd.
    """
    goal = LATEST_VERSION if target is None else target
    if not 0 <= goal <= LATEST_VERSION:
        raise ValueError(f"no migration version {goal}")
    async with conn.transaction():
        await conn.execute(Q["migration_lock"], {"key": MIGRATION_LOCK})
        await conn.execute(Q["create_schema_versions"])
        version = await _version(conn)
        if version > LATEST_VERSION:
            raise DatabaseTooNewError(
                f"database is at schema version {version}, this aisd knows up to {LATEST_VERSION}"
            )
        for migration in MIGRATIONS:
            if version < migration.version <= goal:
                # A whole script, without parameters: sent as one simple query.
                await conn.execute(cast(Any, migration.sql))
                params = {"version": migration.version, "name": migration.name}
                await conn.execute(Q["record_schema_version"], params)
        return await _version(conn)


async def _version(conn: psycopg.AsyncConnection[Any]) -> int:
    cursor = await conn.execute(Q["schema_version"])
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
