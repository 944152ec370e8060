"""Benchmark of ``imports.list`` on a long history: each filter shape's read, through the store.

Usage: ``python bench/list_bench.py DB`` (DB: a database with many imports, e.g. one
``scale_bench.py --ticks-only DB`` populated; it is migrated to this code's schema in place,
so give it a copy).

Per filter shape (none, a kind, a state, a token, an owner), the milliseconds of
:meth:`aisd.store.Store.imports` with ``limit=100``: median of 5 calls after one untimed.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from contextlib import closing
from pathlib import Path

import anyio

from aisd.store import ImportKind, ImportQuery, ImportState, open_store


async def _main(db: Path) -> None:
    async with open_store(db) as store:
        with closing(sqlite3.connect(db)) as plain:
            count = plain.execute("SELECT count(*) FROM imports").fetchone()[0]
            # A token and an owner from the middle of the table, not its first rows.
            token = plain.execute(
                "SELECT token_id FROM imports WHERE token_id IS NOT NULL LIMIT 1 OFFSET ?",
                (count // 2,),
            ).fetchone()[0]
            owner = plain.execute(
                "SELECT external_id FROM owners LIMIT 1 OFFSET (SELECT count(*) / 2 FROM owners)"
            ).fetchone()[0]
        print(f"{count} imports")
        shapes = {
            "no filter": ImportQuery(),
            "kind = refresh": ImportQuery(kind=ImportKind.REFRESH),
            "state = failed": ImportQuery(state=ImportState.FAILED),
            "a token": ImportQuery(token_id=token),
            "an owner": ImportQuery(owner_external_id=owner),
        }
        for label, query in shapes.items():
            found = await store.imports(query)
            times = []
            for _ in range(5):
                began = time.perf_counter()
                await store.imports(query)
                times.append(time.perf_counter() - began)
            print(f"{label:16} {len(found):4} rows  {1000 * statistics.median(times):8.2f} ms")


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    anyio.run(_main, parser.parse_args().db, backend="asyncio")


if __name__ == "__main__":
    main()
