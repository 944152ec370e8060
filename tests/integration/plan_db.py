"""A migrated SQLite database with a long history of ended imports, for the query-plan tests:
a plan that stays on its index there does not grow with the history."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

from aisd.store.sqlite import migrate
from aisd.store.sqlite._queries import QUERIES

__all__ = ["ENDED_IMPORTS", "history", "plan_steps"]

ENDED_IMPORTS = 5000


@contextmanager
def history(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a new database at ``path`` holding one owner with
    :data:`ENDED_IMPORTS` successful refreshes (not yet committed: callers add their own rows,
    then commit)."""
    migrate(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO owners (id, external_id, created_at) VALUES (1, 'o', 'x')")
        conn.executemany(
            "INSERT INTO imports (id, owner_id, kind, state, phase, since, created_at,"
            " polls, attempts, default_import_attempts)"
            " VALUES (?, 1, 'refresh', 'successful', 'done', '2026-01-01', ?, 1, 0, 1)",
            [(f"imp_{i:016x}", f"2026-01-01T00:00:{i % 60:02d}Z") for i in range(ENDED_IMPORTS)],
        )
        yield conn


def plan_steps(
    conn: sqlite3.Connection, name: str, params: Mapping[str, object] | Sequence[object]
) -> list[str]:
    """The steps of statement ``name``'s query plan, as EXPLAIN QUERY PLAN details them."""
    return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {QUERIES[name]}", params)]
