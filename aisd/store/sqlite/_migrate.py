"""Numbered forward migrations (``migrations/NNNN_name.sql``), version kept in ``user_version``.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the new version
number, so a crash leaves the database at a whole version, and two processes starting at once
migrate it once. Migrations run synchronously on a plain ``sqlite3`` connection before the store
opens its own connections.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from aisd.store.sqlite._errors import DatabaseTooNewError, StoreError
from aisd.store.sqlite._queries import QUERIES

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "migrate", "split_statements"]

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for entry in files("aisd.store.sqlite").joinpath("migrations").iterdir():
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


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (trigger bodies stay whole).

    ``executescript`` would commit any open transaction first, so statements are run one by
    one inside the migration's own transaction instead.
    """
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError("migration ends with an incomplete statement")
    return statements


def migrate(path: str | Path, *, target: int | None = None) -> int:
    """Bring the database at ``path`` to ``target`` (default: the latest version).

    Args:
        path: the SQLite file (created if missing, with the process umask: callers that care
            about its mode create it first).
        target: the version to stop at; tests use it to build databases at older versions.

    Returns:
        The version the database is at afterwards.

    Raises:
        DatabaseTooNewError: the database is at a version this code does not know.
        StoreError: a migration left foreign-key violations behind (it is rolled back).
    """
    goal = LATEST_VERSION if target is None else target
    if not 0 <= goal <= LATEST_VERSION:
        raise ValueError(f"no migration version {goal}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(QUERIES["migration_pragmas"])
        version = _version(conn)
        if version > LATEST_VERSION:
            raise DatabaseTooNewError(
                f"database is at schema version {version}, this aisd knows up to {LATEST_VERSION}"
            )
        for migration in MIGRATIONS:
            if version < migration.version <= goal:
                _apply(conn, migration)
        return _version(conn)
    finally:
        conn.close()


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute(QUERIES["get_user_version"]).fetchone()
    return int(row[0])


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute(QUERIES["begin_immediate"])
    try:
        # Re-read inside the write lock: another process may have migrated meanwhile.
        if _version(conn) >= migration.version:
            conn.execute(QUERIES["rollback"])
            return
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        if conn.execute(QUERIES["foreign_key_check"]).fetchone() is not None:
            raise StoreError(f"migration {migration.version} broke foreign keys")
        conn.execute(QUERIES["set_user_version"].format(version=int(migration.version)))
        conn.execute(QUERIES["commit"])
    except BaseException:
        conn.execute(QUERIES["rollback"])
        raise
