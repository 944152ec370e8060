"""The PostgreSQL backend speaks every statement of the backend-neutral step code."""

from __future__ import annotations

import re

from aisd.store.postgresql._dialect import Row, to_postgres
from aisd.store.postgresql._queries import QUERIES as PG
from aisd.store.sqlite._queries import QUERIES as SQLITE

# SQLite's own housekeeping, which the PostgreSQL backend does its own way (migrations under an
# advisory lock, transactions by the driver, a relaxed commit by SET LOCAL).
SQLITE_ONLY = frozenset(
    {
        "begin_immediate",
        "begin_read",
        "commit",
        "rollback",
        "writer_pragmas",
        "reader_pragmas",
        "scratch_pragmas",
        "migration_pragmas",
        "get_user_version",
        "set_user_version",
        "foreign_key_check",
        "commit_with_fsync",
        "backup_integrity",
        "backup_standalone",
        "backup_counts",
        "backup_tables",
        "backup_source_pragmas",
        "backup_feed_heads",
        "restore_carry_head",
        "checkpointer_pragmas",
        "set_busy_timeout",
        "wal_checkpoint_passive",
    }
)


def test_every_shared_statement_has_a_postgresql_text() -> None:
    assert sorted(set(SQLITE) - set(PG) - SQLITE_ONLY) == []


def test_a_sqlite_statement_is_run_as_its_postgresql_namesake() -> None:
    assert to_postgres(SQLITE["budget"]) == PG["budget"]
    assert "FOR UPDATE" in to_postgres(SQLITE["budget"])
    # The backend's own statements pass through.
    assert to_postgres(PG["lock_quota_reach"]) == PG["lock_quota_reach"]


def test_postgresql_texts_use_psycopg_parameters_only() -> None:
    for name, text in PG.items():
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        assert "json_each" not in code, name
        assert "PRAGMA" not in code, name
        assert " :" not in code.replace("::", ""), name
        assert "?" not in code, name


def test_a_row_answers_to_position_and_to_name() -> None:
    row = Row((7, "x"), {"id": 0, "name": 1})
    assert (row[0], row["id"], row["name"]) == (7, 7, "x")
    assert row.keys() == ["id", "name"]
    assert tuple(row) == (7, "x")


def _code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def test_each_postgresql_text_takes_the_parameters_its_sqlite_namesake_is_given() -> None:
    for name, sqlite_text in SQLITE.items():
        if name not in PG:
            continue
        sqlite_code, pg_code = _code(sqlite_text), _code(PG[name])
        assert sqlite_code.count("?") == pg_code.count("%s"), name
        given = set(re.findall(r"(?<![:\w]):([a-z_]\w*)", sqlite_code))
        taken = set(re.findall(r"%\((\w+)\)s", pg_code))
        # Leases run on the database's clock: there `now` only measures the lease's length, or
        # goes unused (the callers pass it either way).
        assert given ^ taken <= {"now"}, name
