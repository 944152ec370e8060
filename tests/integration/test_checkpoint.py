"""The WAL checkpoint off the commit path: the writer never checkpoints, the checkpointer thread
copies the log back on its own connection, and closing leaves no log behind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from aisd.store import open_store
from aisd.store.sqlite._checkpoint import Checkpointer, log_frames
from aisd.store.sqlite._migrate import migrate


def _wal(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def _fill(db: Path, rows: int) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE IF NOT EXISTS filler (x TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(rows)])
    return conn


@pytest.mark.anyio
async def test_the_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    db = tmp_path / "aisd.db"
    async with open_store(db) as store:
        rows = await store._writer.execute_fetchall("PRAGMA wal_autocheckpoint")
        assert next(iter(rows))[0] == 0
    # The last connection to close checkpoints the log and removes it.
    assert not _wal(db).exists()


def test_truncate_copies_the_whole_log_back_and_empties_the_file(tmp_path: Path) -> None:
    db = tmp_path / "aisd.db"
    migrate(db)
    with closing(_fill(db, 5_000)):
        assert _wal(db).stat().st_size > 1_000_000  # more than the 1,000 pages of autocheckpoint
        checkpointer = Checkpointer(db)
        try:
            assert checkpointer.truncate() is True
        finally:
            checkpointer.close()
            checkpointer.release()
        assert _wal(db).stat().st_size == 0


def test_a_reported_write_is_checkpointed_by_the_thread(tmp_path: Path) -> None:
    db = tmp_path / "aisd.db"
    migrate(db)
    with closing(_fill(db, 3_000)):
        # The new pages are in the log only; a checkpoint copies them into the database file.
        before = db.stat().st_size
        checkpointer = Checkpointer(db)
        copied = threading.Event()
        original = checkpointer._checkpoint

        def watched(name: str, *, wait_ms: int) -> bool:
            done = original(name, wait_ms=wait_ms)
            if done:
                copied.set()
            return done

        checkpointer._checkpoint = watched  # type: ignore[method-assign]
        try:
            assert db.stat().st_size == before  # nothing copied before a write is reported
            frames, done = log_frames(db.with_name(db.name + "-shm").read_bytes())
            assert frames > 1000  # past SQLite's own trigger, which the writer has switched off
            assert done == 0
            checkpointer.wrote()
            assert copied.wait(timeout=60)
        finally:
            checkpointer.close()
            checkpointer.release()
        assert db.stat().st_size > before + 1_000_000


def test_a_write_below_the_trigger_does_not_wake_the_thread(tmp_path: Path) -> None:
    db = tmp_path / "aisd.db"
    migrate(db)
    with closing(_fill(db, 10)):
        frames, _ = log_frames(db.with_name(db.name + "-shm").read_bytes())
        assert 0 < frames < 1000
        checkpointer = Checkpointer(db)
        checkpointed: list[str] = []

        def noted(name: str, *, wait_ms: int) -> bool:
            checkpointed.append(name)
            return True

        checkpointer._checkpoint = noted  # type: ignore[method-assign]
        try:
            checkpointer.wrote()
            # Nothing was handed to the thread: no write is counted for it to look at.
            assert checkpointer._writes == 0
        finally:
            checkpointer.close()
            checkpointer.release()
        assert checkpointed == []


# SQLite's "dead man switch": every connection holds a shared POSIX lock on this byte of the
# -shm file; a process that gets it exclusively takes itself for the first and rebuilds the file.
_SHM_DMS_BYTE = 128
_PROBE = f"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, {_SHM_DMS_BYTE})
except OSError:
    print("held")
else:
    print("free")
"""


def _dms_lock(db: Path) -> str:
    shm = db.with_name(db.name + "-shm")
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(shm)], capture_output=True, text=True, check=True
    )
    return probe.stdout.strip()


@pytest.mark.anyio
async def test_reading_the_log_header_keeps_the_processs_shm_locks(tmp_path: Path) -> None:
    # Closing a descriptor of the -shm file would drop SQLite's locks on it: a backup process
    # connecting next rebuilt the -shm the daemon had mapped, and the daemon died of SIGBUS.
    db = tmp_path / "aisd.db"
    async with open_store(db) as store:
        assert _dms_lock(db) == "held"
        for _ in range(3):
            assert store._checkpointer._frames()[0] >= 0
        assert _dms_lock(db) == "held"
