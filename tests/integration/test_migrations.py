"""Migrations: every earlier schema version opens, migrates and keeps its data."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aisd.kontomatik._models import Account, ImportResult, MoneyTransaction
from aisd.store import ConsentIn, DatabaseTooNewError, ImportState, TokenState, open_store
from aisd.store.sqlite import LATEST_VERSION, migrate
from aisd.store.sqlite._migrate import MIGRATIONS, split_statements
from tests import store_calls as sc
from tests.integration.steps_helpers import to_polling

IBAN = "PL69137013140000049678278112"
TS = "2026-05-01T08:00:00.000000Z"
PERSONS = '[{"name":"Maria","kind":"OWNER","address":null}]'

# Representative rows as schema version 1 shapes them: an owner with a consent, token, session,
# a finished import with its raw reply, an account with two transactions, ledger and events.
V1_ROWS = [
    "INSERT INTO owners (id, external_id, created_at, persons, persons_at) VALUES"
    f" (1, 'owner-1', '{TS}', '{PERSONS}', '{TS}')",
    f"INSERT INTO consents VALUES (1, 1, 'session-1', 'KontoBank', '2026-10-01', 100, '{TS}')",
    f"INSERT INTO sessions VALUES (1, 1, 'session-1', 'sig-SECRET', '{TS}')",
    "INSERT INTO tokens (id, owner_id, consent_id, multiple_access_id, state, created_at,"
    f" expires_at) VALUES ('tok_00000000000000aa', 1, 1, 'maid-SECRET', 'active', '{TS}',"
    " '2026-10-28T08:00:00.000000Z')",
    "INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase,"
    " since, command_id, polls, created_at, started_at, finished_at, accounts, transactions)"
    " VALUES ('imp_00000000000000aa', 1, 'tok_00000000000000aa', 1, 1, 'initial', 'successful',"
    f" 'done', '2025-05-01', '455026009', 3, '{TS}', '{TS}', '{TS}', 1, 2)",
    "INSERT INTO raw_replies VALUES ('imp_00000000000000aa', '2025-05-01', x'1f8b', '2026-05-01')",
    "INSERT INTO accesses (kind, token_id, import_id, sent_at, outcome) VALUES"
    f" ('default_import', 'tok_00000000000000aa', 'imp_00000000000000aa', '{TS}', 'ok')",
    "INSERT INTO accounts (id, owner_id, iban, name, currency_name, balance, updated_at) VALUES"
    f" (1, 1, '{IBAN}', 'Konto 0', 'PLN', '259402.51', '{TS}')",
    "INSERT INTO transactions (id, account_id, transaction_on, booked_on, amount, title, status,"
    " labels, first_import_id, last_import_id) VALUES"
    " (1, 1, '2026-04-02', NULL, '-20.00', 'Zwrot', 'PENDING', '[\"x\"]',"
    " 'imp_00000000000000aa', 'imp_00000000000000aa'),"
    " (2, 1, '2026-04-01', '2026-04-01', '350.00', 'WPLATA', 'DONE', '[]',"
    " 'imp_00000000000000aa', 'imp_00000000000000aa')",
    f"INSERT INTO events (at, type, owner_external_id, import_id, data) VALUES"
    f" ('{TS}', 'consent.received', 'owner-1', 'imp_00000000000000aa', '{{}}'),"
    f" ('{TS}', 'import.succeeded', 'owner-1', 'imp_00000000000000aa', '{{\"added\":2}}')",
]


# What version 2 adds to those rows: the change sequence, as 0002 backfills it.
V2_ROWS = [
    "UPDATE transactions SET change_seq = id",
    "UPDATE counters SET value = 2 WHERE name = 'change_seq'",
]


# From version 11 an account row has its key (its IBAN), as 0011 backfills it.
V1_ACCOUNT = next(row for row in V1_ROWS if row.startswith("INSERT INTO accounts"))
V11_ACCOUNT = V1_ACCOUNT.replace("(id, owner_id, iban,", "(id, owner_id, key, iban,").replace(
    "(1, 1, '", f"(1, 1, '{IBAN}', '"
)


def seed(path: Path, version: int) -> None:
    assert migrate(path, target=version) == version
    if version >= 1:
        rows = V1_ROWS + (V2_ROWS if version >= 2 else [])
        if version >= 11:
            rows = [V11_ACCOUNT if row == V1_ACCOUNT else row for row in rows]
        with closing(sqlite3.connect(path)) as conn, conn:
            for statement in rows:
                conn.execute(statement)


def columns(path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_migration_files_are_numbered_and_split_whole() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION >= 2
    assert split_statements(
        "-- c\nCREATE TABLE a (x);\n\nINSERT INTO a VALUES (';');\n-- end\n"
    ) == [
        "-- c\nCREATE TABLE a (x);",
        "INSERT INTO a VALUES (';');",
    ]
    trigger = "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  DELETE FROM a;\n  SELECT 1;\nEND;\n"
    assert split_statements(trigger) == [trigger.strip()]
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("SELECT 1")


@pytest.mark.parametrize("version", range(LATEST_VERSION))
@pytest.mark.anyio
async def test_every_earlier_version_migrates_with_its_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "aisd.db"
    seed(path, version)
    async with open_store(path) as store:
        with closing(sqlite3.connect(path)) as plain:
            assert plain.execute("PRAGMA user_version").fetchone() == (LATEST_VERSION,)
            assert plain.execute("PRAGMA foreign_key_check").fetchall() == []
        assert "change_seq" in columns(path, "transactions")
        if version == 0:
            assert await sc.list_imports(store) == []
            return
        # The data survived, readable through the store.
        [record] = await sc.list_imports(store)
        assert (record.import_id, record.state, record.polls) == (
            "imp_00000000000000aa",
            ImportState.SUCCESSFUL,
            3,
        )
        assert record.finished_at == datetime(2026, 5, 1, 8, tzinfo=UTC)
        assert await sc.token_state(store, "tok_00000000000000aa") == TokenState.ACTIVE
        assert await sc.owner_details(store, "owner-1") == [
            {"name": "Maria", "kind": "OWNER", "address": None}
        ]
        txs = await sc.transactions(store, "owner-1", IBAN)
        assert [(t.id, t.title, t.labels) for t in txs] == [(1, "Zwrot", ("x",)), (2, "WPLATA", ())]
        assert [e.type for e in await sc.list_events(store, after=0, limit=10)] == [
            "consent.received",
            "import.succeeded",
        ]
        assert [(i, c) for i, c, _ in await sc.raw_replies(store, "owner-1")] == [
            ("imp_00000000000000aa", date(2025, 5, 1))
        ]
        # ... and the migrated rows merge with a new import: the pending one books in place, and
        # the change sequence continues after the backfilled values.
        out = await store.submit_consent(
            ConsentIn("owner-1", "s2", "sig"),
            now=datetime(2026, 5, 2, tzinfo=UTC),
            since=date(2026, 3, 1),
            expires_at=datetime(2026, 6, 1, tzinfo=UTC),
        )
        booked = MoneyTransaction(
            date(2026, 4, 2), date(2026, 4, 3), Decimal("-20.00"), None, "Zwrot", status="DONE",
            labels=("x",),
        )  # fmt: skip
        kept = MoneyTransaction(
            date(2026, 4, 1), date(2026, 4, 1), Decimal("350.00"), None, "WPLATA", status="DONE"
        )
        result = ImportResult(
            accounts=(Account(IBAN, "Konto 0", "PLN", None, None, transactions=(booked, kept)),)
        )
        claim = await to_polling(store, out.import_id, now=datetime(2026, 5, 2, tzinfo=UTC))
        stats = await sc.finish_success(
            store,
            claim,
            result,
            now=datetime(2026, 5, 2, tzinfo=UTC),
            raw_reply=None,
            coverage_start=date(2026, 3, 1),
            polls=1,
        )
        assert (stats.added, stats.modified, stats.removed) == (0, 1, 0)
    with closing(sqlite3.connect(path)) as plain:
        assert plain.execute("SELECT id, change_seq FROM transactions ORDER BY id").fetchall() == [
            (1, 3),
            (2, 2),
        ]


@pytest.mark.anyio
async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aisd.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    with pytest.raises(DatabaseTooNewError, match=str(LATEST_VERSION + 1)):
        await open_store(path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (LATEST_VERSION + 1,)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_a_failing_migration_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    path = tmp_path / "aisd.db"
    seed(path, 1)
    with closing(sqlite3.connect(path)) as conn, conn:
        # A table 0002 creates, already present: its CREATE fails mid-migration.
        conn.execute("CREATE TABLE transaction_tombstones (x)")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM transactions").fetchone() == (2,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "counters" not in tables
    assert "change_seq" not in columns(path, "transactions")
