"""reuse_by_account (migration 0014): the Reuse ledger by account, kept by triggers equal to
its definition over accesses and token_accounts, backfilled by its migration, and read by the
planner tick with the same ledger as the read by token gives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisd.planner import pseudo_account
from aisd.store.sqlite._codec import dt_in
from aisd.store.sqlite._migrate import migrate
from aisd.store.sqlite._steps import account_ledger
from aisd.store.sqlite._sync import rows
from aisd.store.sqlite._tokens import parse_ledger, token_records

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TOKENS = [f"tok_{i:016x}" for i in range(4)]
IBANS = ["PL01", "PL02", "PL03"]

# What the table must hold: a row per counted Reuse access and account its token reaches now.
DEFINITION = """
SELECT COALESCE(ta.iban, 'token:' || a.token_id), a.sent_at, a.id, a.token_id
FROM accesses AS a LEFT JOIN token_accounts AS ta ON ta.token_id = a.token_id
WHERE a.kind = 'reuse' AND a.token_id IS NOT NULL AND a.outcome IS NOT 'not_sent'
"""
TABLE = "SELECT account, sent_at, access_id, token_id FROM reuse_by_account"


def ts(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def add_tokens(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO tokens (id, state, created_at, expires_at) VALUES (?, 'active', ?, ?)",
        [(t, ts(0), ts(60 * 24 * 90)) for t in TOKENS],
    )


def same_as_definition(db: sqlite3.Connection) -> None:
    assert sorted(db.execute(TABLE)) == sorted(db.execute(DEFINITION))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reuse") / "aisd.db"
    migrate(path)
    with closing(sqlite3.connect(path)) as db, db:
        add_tokens(db)
    return path


@pytest.fixture
def fresh(template: Path) -> Iterator[sqlite3.Connection]:
    yield from _copy(template)


def _copy(template: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(":memory:")) as db:
        src.backup(db)
        db.execute("PRAGMA foreign_keys = ON")
        yield db


_token = st.sampled_from(TOKENS)
_op = st.one_of(
    st.tuples(
        st.just("access"),
        st.sampled_from(["reuse", "default_import"]),
        st.none() | _token,
        st.integers(0, 60),
        st.sampled_from([None, "ok", "error", "not_sent"]),
    ),
    st.tuples(st.just("outcome"), st.integers(1, 30), st.sampled_from(["ok", "not_sent", None])),
    st.tuples(st.just("move"), st.integers(1, 30), st.none() | _token, st.integers(0, 60)),
    st.tuples(st.just("iban"), _token, st.sampled_from(IBANS)),
    st.tuples(st.just("forget"), st.lists(_token, min_size=1, max_size=2)),
    st.tuples(st.just("drop"), st.integers(1, 30)),
)


def apply(db: sqlite3.Connection, op: tuple[object, ...]) -> None:
    match op:
        case ("access", kind, token_id, minutes, outcome):
            db.execute(
                "INSERT INTO accesses (kind, token_id, sent_at, outcome) VALUES (?, ?, ?, ?)",
                (kind, token_id, ts(int(str(minutes))), outcome),
            )
        case ("outcome", access_id, outcome):
            db.execute("UPDATE accesses SET outcome = ? WHERE id = ?", (outcome, access_id))
        case ("move", access_id, token_id, minutes):
            db.execute(
                "UPDATE accesses SET token_id = ?, sent_at = ? WHERE id = ?",
                (token_id, ts(int(str(minutes))), access_id),
            )
        case ("iban", token_id, iban):
            db.execute(
                "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (token_id, iban) DO NOTHING",
                (token_id, iban, ts(0)),
            )
        case ("forget", list() as token_ids):
            # One statement for several tokens, as an erasure deletes them.
            ids = [str(t) for t in token_ids]
            marks = ",".join("?" * len(ids))
            db.execute(f"DELETE FROM token_accounts WHERE token_id IN ({marks})", ids)
        case ("drop", access_id):
            db.execute("DELETE FROM accesses WHERE id = ?", (access_id,))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_op, max_size=40), st.lists(_token, min_size=1, max_size=3, unique=True))
def test_triggers_keep_the_table_equal_to_its_definition(
    template: Path, ops: list[tuple[object, ...]], asked: list[str]
) -> None:
    for db in _copy(template):
        db.row_factory = None
        for op in ops:
            apply(db, op)
            same_as_definition(db)
        # ... and the tick's read by account gives the ledger the read by token gives.
        db.row_factory = sqlite3.Row
        since = T0 + timedelta(minutes=10)
        found = rows(db, "token_records_by_ids", {
            "token_ids": _json(asked), "owner_external_id": None, "state": None
        })  # fmt: skip
        by_token, _ = parse_ledger(
            rows(db, "reuse_ledger", {"token_ids": _json(asked), "since": dt_in(since)})
        )
        by_account, _ = account_ledger(db, token_records(found), since=since)
        assert by_account == by_token


def _json(values: list[str]) -> str:
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def test_a_token_without_accounts_counts_on_the_planners_pseudo_account(
    fresh: sqlite3.Connection,
) -> None:
    token = TOKENS[0]
    fresh.execute(
        "INSERT INTO accesses (kind, token_id, sent_at) VALUES ('reuse', ?, ?)", (token, ts(5))
    )
    assert fresh.execute(TABLE).fetchall() == [(pseudo_account(token), ts(5), 1, token)]
    fresh.execute(
        "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (?, 'PL01', ?)",
        (token, ts(6)),
    )
    assert fresh.execute(TABLE).fetchall() == [("PL01", ts(5), 1, token)]
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        fresh.execute("UPDATE token_accounts SET iban = 'PL02'")


def test_the_migration_backfills_the_ledger_by_account(tmp_path: Path) -> None:
    path = tmp_path / "aisd.db"
    assert migrate(path, target=13) == 13
    with closing(sqlite3.connect(path)) as db, db:
        add_tokens(db)
        db.executemany(
            "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (?, ?, ?)",
            [(TOKENS[0], "PL01", ts(0)), (TOKENS[0], "PL02", ts(0)), (TOKENS[1], "PL01", ts(0))],
        )
        db.executemany(
            "INSERT INTO accesses (kind, token_id, sent_at, outcome) VALUES (?, ?, ?, ?)",
            [
                ("reuse", TOKENS[0], ts(1), "ok"),
                ("reuse", TOKENS[1], ts(2), None),
                ("reuse", TOKENS[2], ts(3), "error"),  # no accounts: its pseudo-account
                ("reuse", TOKENS[1], ts(4), "not_sent"),
                ("default_import", TOKENS[0], ts(5), "ok"),
                ("reuse", None, ts(6), "ok"),
            ],
        )
    assert migrate(path) >= 14
    with closing(sqlite3.connect(path)) as db:
        assert sorted(db.execute(TABLE)) == [
            ("PL01", ts(1), 1, TOKENS[0]),
            ("PL01", ts(2), 2, TOKENS[1]),
            ("PL02", ts(1), 1, TOKENS[0]),
            (pseudo_account(TOKENS[2]), ts(3), 3, TOKENS[2]),
        ]
        same_as_definition(db)
