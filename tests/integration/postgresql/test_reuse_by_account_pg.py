"""reuse_by_account on PostgreSQL (migration 0006): its triggers keep it equal to its
definition over accesses and token_accounts (row triggers run after their whole statement
here, unlike SQLite's), and the migration backfills it."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from aisd.planner import pseudo_account
from aisd.store.postgresql import connection_kwargs, migrate
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.anyio

TOKENS = [f"tok_{i:016x}" for i in range(4)]
IBANS = ["PL01", "PL02", "PL03"]
DEFINITION = """
SELECT COALESCE(ta.iban, 'token:' || a.token_id), a.sent_at, a.id, a.token_id
FROM accesses AS a LEFT JOIN token_accounts AS ta ON ta.token_id = a.token_id
WHERE a.kind = 'reuse' AND a.token_id IS NOT NULL AND a.outcome IS DISTINCT FROM 'not_sent'
"""
TABLE = "SELECT account, sent_at, access_id, token_id FROM reuse_by_account"


def ts(minutes: int) -> str:
    return f"2026-05-01T{minutes // 60:02d}:{minutes % 60:02d}:00.000000Z"


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        **connection_kwargs(url, password=None), autocommit=True
    )


async def _all(conn: psycopg.AsyncConnection[Any], sql: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql)
    return sorted(await cursor.fetchall())


async def _add_tokens(conn: psycopg.AsyncConnection[Any]) -> None:
    for token in TOKENS:
        await conn.execute(
            "INSERT INTO tokens (id, state, created_at, expires_at) VALUES (%s, 'active', %s, %s)",
            (token, ts(0), "2026-08-01T00:00:00.000000Z"),
        )


async def test_triggers_keep_the_table_equal_to_its_definition(postgres_url: str) -> None:
    rng = random.Random(13)
    async with await _connect(postgres_url) as conn:
        await _add_tokens(conn)
        token = TOKENS[0]
        await conn.execute(
            "INSERT INTO accesses (kind, token_id, sent_at) VALUES ('reuse', %s, %s)",
            (token, ts(5)),
        )
        assert await _all(conn, TABLE) == [(pseudo_account(token), ts(5), 1, token)]
        await conn.execute(
            "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (%s, 'PL09', %s)",
            (token, ts(0)),
        )
        with pytest.raises(psycopg.errors.RaiseException, match="never changed"):
            await conn.execute("UPDATE token_accounts SET iban = 'PL08'")
        await conn.execute("DELETE FROM token_accounts")
        assert await _all(conn, TABLE) == [(pseudo_account(token), ts(5), 1, token)]
        for _ in range(300):
            op = rng.randrange(6)
            tokens = rng.sample(TOKENS, rng.randint(1, 2))
            if op == 0:
                outcome = rng.choice([None, "ok", "error", "not_sent"])
                kind = rng.choice(["reuse", "reuse", "default_import"])
                await conn.execute(
                    "INSERT INTO accesses (kind, token_id, sent_at, outcome)"
                    " VALUES (%s, %s, %s, %s)",
                    (kind, rng.choice([*TOKENS, None]), ts(rng.randint(0, 60)), outcome),
                )
            elif op == 1:
                await conn.execute(
                    "UPDATE accesses SET outcome = %s WHERE id = %s",
                    (rng.choice(["ok", "not_sent", None]), rng.randint(1, 40)),
                )
            elif op == 2:
                await conn.execute(
                    "UPDATE accesses SET token_id = %s, sent_at = %s WHERE id = %s",
                    (rng.choice([*TOKENS, None]), ts(rng.randint(0, 60)), rng.randint(1, 40)),
                )
            elif op == 3:
                await conn.execute(
                    "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (token_id, iban) DO NOTHING",
                    (tokens[0], rng.choice(IBANS), ts(0)),
                )
            elif op == 4:  # one statement for several tokens, as an erasure deletes them
                await conn.execute("DELETE FROM token_accounts WHERE token_id = ANY(%s)", (tokens,))
            else:
                await conn.execute("DELETE FROM accesses WHERE id = %s", (rng.randint(1, 40),))
            assert await _all(conn, TABLE) == await _all(conn, DEFINITION)


async def test_the_migration_backfills_the_ledger_by_account(
    postgres_server: PostgresServer,
) -> None:
    name = "aisd_reuse_backfill"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    async with await _connect(postgres_server.url(name)) as conn:
        assert await migrate(conn, target=5) == 5
        await _add_tokens(conn)
        for token, iban in [(TOKENS[0], "PL01"), (TOKENS[0], "PL02"), (TOKENS[1], "PL01")]:
            await conn.execute(
                "INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (%s, %s, %s)",
                (token, iban, ts(0)),
            )
        for kind, token_or_none, minutes, outcome in [
            ("reuse", TOKENS[0], 1, "ok"),
            ("reuse", TOKENS[1], 2, None),
            ("reuse", TOKENS[2], 3, "error"),  # no accounts: its pseudo-account
            ("reuse", TOKENS[1], 4, "not_sent"),
            ("default_import", TOKENS[0], 5, "ok"),
            ("reuse", None, 6, "ok"),
        ]:
            await conn.execute(
                "INSERT INTO accesses (kind, token_id, sent_at, outcome) VALUES (%s, %s, %s, %s)",
                (kind, token_or_none, ts(minutes), outcome),
            )
        assert await migrate(conn) >= 6
        assert await _all(conn, TABLE) == [
            ("PL01", ts(1), 1, TOKENS[0]),
            ("PL01", ts(2), 2, TOKENS[1]),
            ("PL02", ts(1), 1, TOKENS[0]),
            (pseudo_account(TOKENS[2]), ts(3), 3, TOKENS[2]),
        ]
        assert await _all(conn, TABLE) == await _all(conn, DEFINITION)
