"""The pipeline's every-second queries stay on the partial index of open imports, with or
without ANALYZE statistics, however many ended imports pile up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aisd.store.sqlite import migrate
from aisd.store.sqlite._queries import QUERIES


def test_open_import_queries_use_the_partial_index(tmp_path: Path) -> None:
    db = tmp_path / "aisd.db"
    migrate(db)
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO owners (id, external_id, created_at) VALUES (1, 'o', 'x')")
        conn.executemany(
            "INSERT INTO imports (id, owner_id, kind, state, phase, since, created_at,"
            " polls, attempts, default_import_attempts)"
            " VALUES (?, 1, 'refresh', 'successful', 'done', '2026-01-01', ?, 1, 0, 1)",
            [(f"imp_{i:016x}", f"2026-01-01T00:00:{i % 60:02d}Z") for i in range(5000)],
        )
        conn.commit()
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            for name, params in (
                ("queued_jobs", {"now": "2026-02-01T00:00:00Z", "limit": 8}),
                ("in_flight_jobs", {}),
            ):
                plan = " | ".join(
                    row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {QUERIES[name]}", params)
                )
                assert "USING INDEX imports_open" in plan, (name, analyzed, plan)
    finally:
        conn.close()


def test_the_owner_echo_check_reads_only_the_token_s_own_imports(tmp_path: Path) -> None:
    """Run at every successful import: on the state index it would read every successful
    import of every token, a cost that grew with the history (``aisd simulate``'s days)."""
    db = tmp_path / "aisd.db"
    migrate(db)
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO owners (id, external_id, created_at) VALUES (1, 'o', 'x')")
        conn.executemany(
            "INSERT INTO imports (id, owner_id, kind, state, phase, since, created_at,"
            " polls, attempts, default_import_attempts)"
            " VALUES (?, 1, 'refresh', 'successful', 'done', '2026-01-01', ?, 1, 0, 1)",
            [(f"imp_{i:016x}", f"2026-01-01T00:00:{i % 60:02d}Z") for i in range(5000)],
        )
        conn.commit()
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            plan = " | ".join(
                row[3]
                for row in conn.execute(
                    f"EXPLAIN QUERY PLAN {QUERIES['import_record']}", {"id": "imp_0"}
                )
            )
            assert "SEARCH p USING INDEX imports_token" in plan, (analyzed, plan)
            assert "TEMP B-TREE" not in plan, (analyzed, plan)
    finally:
        conn.close()
