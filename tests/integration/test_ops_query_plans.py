"""Each /metrics scrape and webhook status read stays on an index: its cost follows what it
counts (open imports, tokens near a boundary, a webhook backlog), not the whole history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.plan_db import history, plan_steps

# (query, params, the index each table access must use, in order; a SCAN of the partial index
# of open imports reads open imports only)
CASES = [
    ("metrics_open_imports", {}, ["imports_open"]),
    ("metrics_tokens_expiring", {"until": "2026-02-01T00:00:00Z"}, ["tokens_expiry"]),
    (
        "metrics_tokens_stale",
        {"cutoff": "2026-02-01T00:00:00Z"},
        ["tokens_last_import", "tokens_last_import"],
    ),
    ("webhook_backlog", {"cursor": 4000, "all_types": True, "types": "[]"}, ["PRIMARY KEY"]),
]
_ACCESS = re.compile(r"(?:SEARCH|SCAN) (?:imports|tokens|events)\b.*")


@pytest.mark.parametrize(("name", "params", "wanted"), CASES, ids=[c[0] for c in CASES])
def test_scrape_queries_use_their_index(
    tmp_path: Path, name: str, params: dict[str, object], wanted: list[str]
) -> None:
    with history(tmp_path / "aisd.db") as conn:
        conn.executemany(
            "INSERT INTO events (id, at, type)"
            " VALUES (?, '2026-01-01T00:00:00Z', 'import.started')",
            [(i,) for i in range(1, 5001)],
        )
        conn.commit()
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            steps = [s for s in plan_steps(conn, name, params) if _ACCESS.fullmatch(s)]
            assert len(steps) == len(wanted), (name, analyzed, steps)
            for step, index in zip(steps, wanted, strict=True):
                assert index in step, (name, analyzed, step)
