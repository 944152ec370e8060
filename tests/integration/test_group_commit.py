"""Group commit of the store's short writes: shared batches, one transaction, isolated failures."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from aisd.store import ConsentIn, NotFoundError, SqliteStore, StorageUnavailable, open_store
from aisd.store._coalesce import Coalescer
from aisd.store.sqlite._sync import Write, group_transaction

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _table(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    return db


def _insert(x: int) -> Write:
    def fn(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (x) VALUES (?)", (x,))
        return x

    return Write(fn, durable=True)


def _stored(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT x FROM t ORDER BY x")]


def test_a_write_that_raises_is_rolled_back_alone(tmp_path: Path) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (x) VALUES (2)")
        raise LookupError("no such thing")

    failing = Write(half_then_fail, durable=True)
    writes = [_insert(1), failing, _insert(3)]
    with closing(_table(tmp_path / "g.db")) as db:
        assert group_transaction(writes, db) is True
        assert not db.in_transaction
        assert _stored(db) == [1, 3]
    assert [w.result for w in writes] == [1, None, 3]
    assert isinstance(failing.error, LookupError)
    assert writes[0].error is None
    assert writes[2].error is None


def test_a_storage_failure_fails_the_whole_group(tmp_path: Path) -> None:
    def disk_full(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    writes = [_insert(1), Write(disk_full, durable=True), _insert(3)]
    with closing(_table(tmp_path / "g.db")) as db:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            group_transaction(writes, db)
        assert not db.in_transaction
        assert _stored(db) == []


def test_a_write_alone_that_raises_is_rolled_back_and_keeps_its_error(tmp_path: Path) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (x) VALUES (2)")
        raise LookupError("no such thing")

    failing = Write(half_then_fail, durable=True)
    with closing(_table(tmp_path / "g.db")) as db:
        group_transaction([failing], db)
        assert not db.in_transaction
        assert _stored(db) == []
        # The connection takes the next group as if nothing had happened.
        alone = _insert(4)
        assert group_transaction([alone], db) is True
        assert _stored(db) == [4]
    assert failing.result is None
    assert isinstance(failing.error, LookupError)
    assert alone.result == 4
    assert alone.error is None


def test_a_storage_failure_alone_is_raised_not_kept(tmp_path: Path) -> None:
    def disk_full(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (x) VALUES (2)")
        raise sqlite3.OperationalError("database or disk is full")

    write = Write(disk_full, durable=True)
    with closing(_table(tmp_path / "g.db")) as db:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            group_transaction([write], db)
        assert not db.in_transaction
        assert _stored(db) == []
    assert write.error is None


def test_a_group_of_reads_changes_nothing(tmp_path: Path) -> None:
    read = Write(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0], durable=False)
    with closing(_table(tmp_path / "g.db")) as db:
        assert group_transaction([read], db) is False
    assert read.result == 0


async def test_items_joined_together_share_one_batch_and_its_error() -> None:
    batches: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        batches.append(batch)
        await anyio.lowlevel.checkpoint()
        if 13 in batch:
            raise RuntimeError("batch failed")

    coalescer = Coalescer(write, max_batch=3)
    async with anyio.create_task_group() as tg:
        for item in (1, 2, 3, 4, 5):
            tg.start_soon(coalescer.join, item)
    assert batches == [[1, 2, 3], [4, 5]]
    assert not coalescer.busy
    errors: list[BaseException] = []

    async def join_failing(item: int) -> None:
        try:
            await coalescer.join(item)
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(join_failing, 12)
        tg.start_soon(join_failing, 13)
    assert batches[-1] == [12, 13]
    assert len(errors) == 2


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


def _consent(n: int) -> ConsentIn:
    return ConsentIn(
        owner_external_id=f"owner-{n % 3}",
        session_id=f"session-{n}",
        session_signature=f"signature-{n}-0123456789",
    )


async def test_concurrent_writes_commit_together_and_fail_alone(
    store: SqliteStore, tmp_path: Path
) -> None:
    outcomes: dict[int, str] = {}
    refused: list[BaseException] = []

    async def submit(n: int) -> None:
        outcome = await store.submit_consent(
            _consent(n), now=T0, since=date(2026, 9, 1), expires_at=T0
        )
        outcomes[n] = outcome.import_id

    async def refresh_unknown() -> None:
        try:
            await store.queue_refresh("tok_unknown", now=T0, since=date(2026, 9, 1))
        except NotFoundError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(submit, n)
            if n % 10 == 0:
                tg.start_soon(refresh_unknown)
    assert len(outcomes) == 40
    assert len(refused) == 4
    # Answered means committed: another connection sees every consent.
    with closing(sqlite3.connect(tmp_path / "aisd.db")) as db:
        stored = dict(
            db.execute(
                "SELECT c.session_id, i.id FROM consents c JOIN imports i ON i.consent_id = c.id"
            )
        )
    assert stored == {f"session-{n}": import_id for n, import_id in outcomes.items()}


async def test_a_commit_that_fails_fails_every_caller_in_its_group(store: SqliteStore) -> None:
    def fine(db: sqlite3.Connection) -> int:
        return 1

    def disk_full(db: sqlite3.Connection) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    failures: list[BaseException] = []

    async def run(fn: object) -> None:
        try:
            await store._run(fn)  # type: ignore[arg-type]
        except StorageUnavailable as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, fine)
        tg.start_soon(run, disk_full)
    assert len(failures) == 2
    assert store.health.ok is False
