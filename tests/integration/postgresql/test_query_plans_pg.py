"""PostgreSQL reads of an owner's or token's imports can use the partial indexes of ended
imports (migration 0005): a read that did not name the ended phase could only scan imports."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from aisd.store.postgresql import connection_kwargs
from aisd.store.postgresql._queries import QUERIES

_ANY = dict.fromkeys(("owner_external_id", "token_id", "state", "kind"))

# (query, params, an index it must use: of ended imports, or of the few open ones)
CASES = [
    ("list_raw_replies", {"external_id": "o1"}, "imports_owner"),
    ("replay_owner_after", {"after": ""}, "imports_owner"),
    ("forget_import_ids", {"owner_id": 1, "token_ids": '["tok_1", "tok_501"]'}, "imports_owner"),
    ("forget_import_ids", {"owner_id": 1, "token_ids": '["tok_1", "tok_501"]'}, "imports_token"),
    ("import_record", {"id": "imp_1"}, "imports_token"),
    ("queued_refreshes_of_token", {"token_id": "tok_1"}, "imports_open"),
    ("lapsed_starting", {"claimer": "c"}, "imports_open"),
    # imports.list: each filter on an index it can stop early on (migration 0007).
    ("list_import_records", {"kind": None, "limit": 100}, "imports_created"),
    (
        "list_import_records_in_state",
        {"state": "failed", "kind": None, "limit": 100},
        "imports_state",
    ),
    *(
        (f"list_import_records_of_{what}", {**_ANY, "limit": 100, **given}, index)
        for what, given, index in (
            ("token", {"token_id": "tok_1"}, "imports_token"),
            ("owner", {"owner_external_id": "o1"}, "imports_owner"),
        )
    ),
]


def _seed(conn: psycopg.Connection[Any]) -> None:
    # 500 owners, 1,000 tokens, ten ended imports an owner, each with its raw reply.
    conn.execute(
        "INSERT INTO owners (id, external_id, created_at)"
        " SELECT n, 'o' || n, 'x' FROM generate_series(0, 499) AS n"
    )
    conn.execute(
        "INSERT INTO tokens (id, owner_id, state, created_at, expires_at)"
        " SELECT 'tok_' || n, n % 500, 'active', 'x', 'y' FROM generate_series(0, 999) AS n"
    )
    conn.execute(
        "INSERT INTO imports (id, owner_id, token_id, kind, state, phase, since, created_at)"
        " SELECT 'imp_' || n, n % 500, 'tok_' || (n % 1000), 'refresh', 'successful', 'done',"
        " '2026-01-01', '2026-01-01T00:00:' || lpad((n % 60)::text, 2, '0') || 'Z'"
        " FROM generate_series(0, 4999) AS n"
    )
    conn.execute(
        "INSERT INTO raw_replies (import_id, coverage_start, reply, created_at)"
        " SELECT id, '2025-01-01', '\\x1f8b', created_at FROM imports"
    )
    conn.execute("ANALYZE")


@pytest.mark.parametrize(("name", "params", "index"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_reads_by_owner_or_token_can_use_the_indexes_of_ended_imports(
    postgres_url: str, name: str, params: dict[str, object], index: str
) -> None:
    with psycopg.connect(**connection_kwargs(postgres_url, password=None)) as conn:
        _seed(conn)
        # With sequential scans priced out, a plan still scanning imports has no index to use;
        # one scanning a whole index of ended imports (to test its phase) is no better.
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            str(row[0]) for row in conn.execute(f"EXPLAIN {QUERIES[name]}", params).fetchall()
        )
        conn.rollback()
    assert index in plan, plan
    assert not re.search(r"Seq Scan on imports\b", plan), plan
    assert "Recheck Cond: (phase = 'done'::text)" not in plan, plan
