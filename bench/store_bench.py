"""Benchmark: one import of N transactions through ``finish_success`` against a plain floor.

Usage: ``python bench/store_bench.py [N ...]`` (default ``10000 100000``).

The floor is the least any store must do: turn the same transactions into rows and
``executemany`` them into a same-shaped table in one transaction, with the same pragmas
(WAL, synchronous=FULL, and no checkpoint inside the commit: the store's writer leaves them to
its checkpointer thread, so the floor's connection runs with ``wal_autocheckpoint = 0`` too).
Each measurement runs in a fresh child process so that ``ru_maxrss``
(the process's peak resident set) belongs to that measurement alone; time is measured without
tracemalloc (which slows Python down) and the Python heap peak in a second, traced run.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio

from aisd.events import import_succeeded
from aisd.kontomatik._models import Account, ImportResult, MoneyTransaction
from aisd.phases import Step
from aisd.store import AccessKind, ConsentIn, LeaseStart, StepWrite, Succeed, open_store
from aisd.store.sqlite._codec import tx_values

IBAN = "PL69137013140000049678278112"
NOW = datetime(2026, 5, 1, 8, tzinfo=UTC)
TITLES = ("Zwrot za Sylwestra", "BILETOMAT BILET ZTM    Warszaw", "WPLATA", "SWIAT PRASY GDYNIA")

FLOOR_TABLE = """
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, transaction_on TEXT NOT NULL,
    booked_on TEXT, amount TEXT NOT NULL, balance TEXT, title TEXT NOT NULL, party TEXT,
    party_iban TEXT, kind TEXT, status TEXT, labels TEXT NOT NULL, extra TEXT NOT NULL,
    first_import_id TEXT, last_import_id TEXT, change_seq INTEGER
);
CREATE INDEX transactions_account ON transactions(account_id, transaction_on);
CREATE UNIQUE INDEX transactions_change_seq ON transactions(change_seq);
"""
FLOOR_INSERT = "INSERT INTO transactions VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def transactions(n: int) -> tuple[MoneyTransaction, ...]:
    """N fixture-shaped transactions, newest first, several per day."""
    start = date(2026, 4, 30)
    return tuple(
        MoneyTransaction(
            transaction_on=start - timedelta(days=i // 7),
            booked_on=start - timedelta(days=i // 7 - 1),
            amount=Decimal(-((i * 37) % 50000)) / 100,
            balance=Decimal(259402_51 - i) / 100,
            title=f"{TITLES[i % len(TITLES)]} {i % 13}",
            party="Jan Kowalski Dunikowskiego 23B, 01-200 Warszawa" if i % 3 == 0 else None,
            party_iban="PL83130000002076700146310001" if i % 3 == 0 else None,
            kind="PRZELEW ZEWNĘTRZNY",
            status="DONE",
            labels=("monthly",) if i % 5 == 0 else (),
        )
        for i in range(n)
    )


async def run_store(path: Path, txs: tuple[MoneyTransaction, ...]) -> float:
    async with open_store(path) as store:
        out = await store.submit_consent(
            ConsentIn("owner-1", "session-1", "sig", "maid"),
            now=NOW,
            since=date(2025, 5, 1),
            expires_at=NOW + timedelta(days=180),
        )
        lease = await store.lease(LeaseStart(60, sole=True, max_running=8), now=NOW)
        [job] = await store.claim_work(lease.claimer, now=NOW)
        assert job.claim is not None
        await store.begin_access(
            job.claim, AccessKind.DEFAULT_IMPORT, now=NOW, token_id=out.token_id
        )
        await store.advance(job.claim, StepWrite(Step.COMMAND, command_id="c1"), now=NOW)
        result = ImportResult(
            accounts=(Account(IBAN, "Konto 0", "PLN", None, None, transactions=txs),)
        )
        started = time.perf_counter()
        event = import_succeeded(job, result, polls=1, now=NOW)
        success = Succeed(result, None, date(2025, 5, 1), 1, event)
        stats = await store.advance(job.claim, success, now=NOW)
        elapsed = time.perf_counter() - started
    assert stats.added == len(txs)
    return elapsed


def run_floor(path: Path, txs: tuple[MoneyTransaction, ...]) -> float:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;"
            + FLOOR_TABLE
        )
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        rows = [(1, *tx_values(tx), "imp", "imp", seq) for seq, tx in enumerate(txs, start=1)]
        conn.executemany(FLOOR_INSERT, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - started


def child(kind: str, n: int, traced: bool) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    txs = transactions(n)
    if traced:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        if kind == "store":
            elapsed = anyio.run(run_store, path, txs, backend="asyncio")
        else:
            elapsed = run_floor(path, txs)
    out = {
        "seconds": elapsed,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if traced:
        out["py_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    return out


def measure(kind: str, n: int, traced: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, str(n), "1" if traced else "0"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], int(argv[2]), argv[3] == "1")))
        return
    sizes = [int(a) for a in argv] or [10_000, 100_000]
    header = (
        f"{'N':>8} {'what':>6} {'seconds':>8} {'rows/s':>9} {'py peak MiB':>11} {'maxrss MiB':>10}"
    )
    print(header)
    for n in sizes:
        figures = {}
        for kind in ("floor", "store"):
            timed = measure(kind, n, traced=False)
            traced = measure(kind, n, traced=True)
            figures[kind] = (timed["seconds"], traced["py_peak_mib"], timed["maxrss_mib"])
            secs, peak, rss = figures[kind]
            print(f"{n:>8} {kind:>6} {secs:>8.3f} {n / secs:>9.0f} {peak:>11.1f} {rss:>10.1f}")
        (fs, fp, fr), (ss, sp, sr) = figures["floor"], figures["store"]
        print(f"{n:>8} {'ratio':>6} {ss / fs:>7.2f}x {'':>9} {sp / fp:>10.2f}x {sr / fr:>9.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
