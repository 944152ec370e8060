"""``aisd migrate-store``: copy a SQLite installation into an empty PostgreSQL database.

Both schemas keep the same conventions (ISO text times, decimal text amounts, JSON text), so
rows are copied as they are, ids included, with ``COPY``; the identities then continue above
the highest id. Leases are not copied: the imports a stopped daemon was driving are adopted by
the first daemon on PostgreSQL and resumed as a restart resumes them. The copy is one
transaction, verified by counting every table on both sides before it commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg import sql

from aisd.store.postgresql._connect import connection_kwargs
from aisd.store.postgresql._migrate import migrate
from aisd.store.postgresql._queries import QUERIES as PQ
from aisd.store.sqlite._errors import ConflictError, StoreError
from aisd.store.sqlite._migrate import migrate as migrate_sqlite

__all__ = ["COPIED_TABLES", "copy_sqlite"]

# Parents before children. claimers (leases), state_counts and reuse_by_account (kept by
# triggers from the rows copied) are not copied.
COPIED_TABLES = (
    "owners",
    "consents",
    "sessions",
    "tokens",
    "token_accounts",
    "token_warnings",
    "imports",
    "accesses",
    "accounts",
    "transactions",
    "raw_replies",
    "refused_replies",
    "events",
    "transaction_tombstones",
    "transaction_changes",
    "billing_imports",
    "owner_scores",
    "slots",
)
# Rows that exist in a fresh schema and are replaced by the copy's.
_SEEDED = ("counters", "budget")
# SQLite's rowid keeps a token's insertion order; PostgreSQL has a column for it.
_EXTRA_SOURCE = {"tokens": {"row_order": "rowid"}}
_IDENTITIES = (
    "owners",
    "consents",
    "sessions",
    "tokens",
    "accesses",
    "accounts",
    "transactions",
    "billing_imports",
)


def copy_sqlite(
    path: Path, url: str, *, password: str | None = None
) -> Mapping[str, tuple[int, int]]:
    """Copy the SQLite database at ``path`` into the PostgreSQL database at ``url``.

    Returns:
        Each table's row count in SQLite and in PostgreSQL (equal: the copy committed).

    Raises:
        ConflictError: the PostgreSQL database already holds aisd data.
        StoreError: a count differs after the copy (nothing is committed).
    """
    migrate_sqlite(path)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    kwargs = connection_kwargs(url, password=password)
    _migrate_target(kwargs)
    with closing(source), psycopg.connect(**kwargs) as target, target.transaction():
        if target.execute(PQ["copy_target_rows"]).fetchone() != (0,):
            raise ConflictError("the PostgreSQL database already holds aisd data")
        for table in _SEEDED:
            target.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        for table in (*_SEEDED, *COPIED_TABLES):
            _copy_table(source, target, table)
        # Leases are the old daemon's: nobody drives anything now.
        target.execute(PQ["copy_release_claims"])
        for table in _IDENTITIES:
            _restart_identity(target, table, "row_order" if table == "tokens" else "id")
        counts = {
            table: (_count_sqlite(source, table), _count_postgres(target, table))
            for table in (*_SEEDED, *COPIED_TABLES)
        }
        wrong = sorted(t for t, (a, b) in counts.items() if a != b)
        if wrong:
            raise StoreError(f"row counts differ after the copy: {', '.join(wrong)}")
    return counts


def _migrate_target(kwargs: Mapping[str, Any]) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(**kwargs) as conn:
            await migrate(conn)

    anyio.run(run)


def _restart_identity(target: psycopg.Connection[Any], table: str, column: str) -> None:
    """Let the identity continue above the highest id copied."""
    top = target.execute(
        sql.SQL("SELECT COALESCE(MAX({}), 0) + 1 FROM {}").format(
            sql.Identifier(column), sql.Identifier(table)
        )
    ).fetchone()
    assert top is not None
    target.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} RESTART WITH {}").format(
            sql.Identifier(table), sql.Identifier(column), sql.Literal(int(top[0]))
        )
    )


def _columns(source: sqlite3.Connection, target: psycopg.Connection[Any], table: str) -> list[str]:
    target_columns = [
        row[0] for row in target.execute(PQ["copy_target_columns"], {"table": table}).fetchall()
    ]
    source_columns = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
    extra = _EXTRA_SOURCE.get(table, {})
    return [c for c in target_columns if c in source_columns or c in extra]


def _copy_table(source: sqlite3.Connection, target: psycopg.Connection[Any], table: str) -> None:
    columns = _columns(source, target, table)
    extra = _EXTRA_SOURCE.get(table, {})
    select = ", ".join(extra.get(c, f'"{c}"') for c in columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with target.cursor().copy(statement) as copy:
        for row in source.execute(f"SELECT {select} FROM {table}"):
            copy.write_row(row)


def _count_sqlite(source: sqlite3.Connection, table: str) -> int:
    row = source.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(row[0])


def _count_postgres(target: psycopg.Connection[Any], table: str) -> int:
    row = target.execute(
        sql.SQL("SELECT COUNT(*) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0])
