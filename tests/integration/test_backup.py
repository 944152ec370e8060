"""``aisd backup`` and ``aisd restore`` on real databases: consistent copies, refusals that
replace nothing, rotation and modes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from aisd.backup import BackupError, restore, take_backup, verify_backup
from aisd.cli import main
from aisd.instance import instance_lock
from aisd.store import ConsentIn, open_store
from aisd.store.sqlite import LATEST_VERSION, migrate

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


async def _database(path: Path, owners: int) -> None:
    async with open_store(path) as store:
        for n in range(owners):
            await store.submit_consent(
                ConsentIn(f"owner-{n}", f"sess-{n}", "sig", multiple_access_id=f"mai-{n}"),
                now=NOW,
                since=NOW.date() - timedelta(days=30),
                expires_at=NOW + timedelta(days=180),
            )


async def _more(path: Path, owners: int) -> None:
    """Consents of owners not seen before, each one event."""
    async with open_store(path) as store:
        base = await store.events(after=0, limit=0)
        for n in range(owners):
            await store.submit_consent(
                ConsentIn(f"more-{base.head}-{n}", f"more-{base.head}-{n}", "sig-more"),
                now=NOW,
                since=NOW.date() - timedelta(days=30),
                expires_at=NOW + timedelta(days=180),
            )


def _create_at(path: Path, *, version: int) -> None:
    """An empty aisd database at an older schema version, as an old backup is."""
    migrate(path, target=version)
    path.chmod(0o600)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "aisd.db"
    path.parent.mkdir()
    anyio.run(_database, path, 3)
    return path


def test_backup_is_a_verified_private_standalone_copy(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    summary = take_backup(db, target, keep=7, now=NOW)
    assert summary.path == target
    assert summary.schema_version == LATEST_VERSION
    assert summary.counts["consents"] == 3
    assert summary.counts["events"] == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not Path(f"{target}-wal").exists()
    assert not target.with_name("copy.db.partial").exists()
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with pytest.raises(BackupError, match="never overwrites"):
        take_backup(db, target, keep=7, now=NOW)
    with pytest.raises(BackupError, match="no database"):
        take_backup(tmp_path / "none.db", tmp_path / "x.db", keep=7, now=NOW)


def test_a_directory_keeps_the_newest_backups_only(db: Path, tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    unrelated = directory / "notes.txt"
    unrelated.write_text("kept")
    names = [
        take_backup(db, directory, keep=2, now=NOW + timedelta(hours=h)).path.name for h in range(4)
    ]
    assert names[0] == "aisd-20261201T030000Z.db"
    assert sorted(p.name for p in directory.iterdir()) == sorted([*names[2:], "notes.txt"])


def test_restore_replaces_the_database_and_keeps_the_old_one_aside(
    db: Path, tmp_path: Path
) -> None:
    backup = take_backup(db, tmp_path / "b.db", keep=7, now=NOW).path
    other = tmp_path / "other" / "aisd.db"
    other.parent.mkdir()
    anyio.run(_database, other, 1)
    before = _digest(other)
    done = restore(backup, other, now=NOW)
    summary, aside = done.summary, done.previous
    assert summary.counts["consents"] == 3
    assert aside is not None
    assert _digest(aside) == before
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT COUNT(*) FROM consents").fetchone()[0] == 3


@pytest.mark.parametrize("damage", ["truncate", "scribble", "empty", "not_sqlite", "newer"])
def test_a_bad_backup_is_refused_and_nothing_is_replaced(
    db: Path, tmp_path: Path, damage: str
) -> None:
    backup = take_backup(db, tmp_path / "b.db", keep=7, now=NOW).path
    data = bytearray(backup.read_bytes())
    if damage == "truncate":
        backup.write_bytes(data[: len(data) // 3])
    elif damage == "scribble":
        page = 4096
        for offset in range(2 * page, len(data) - page, page):
            data[offset + 100 : offset + 400] = b"\xa5" * 300
        backup.write_bytes(bytes(data))
    elif damage == "empty":
        backup.write_bytes(b"")
    elif damage == "not_sqlite":
        backup.write_text("hello")
    else:
        with sqlite3.connect(backup) as conn:
            conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    before = _digest(db)
    with pytest.raises(BackupError) as info:
        restore(backup, db, now=NOW)
    assert str(backup) in str(info.value)
    assert _digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir() if "restor" in p.name) == []


def test_restore_refuses_while_the_daemon_runs(db: Path, tmp_path: Path) -> None:
    backup = take_backup(db, tmp_path / "b.db", keep=7, now=NOW).path
    with instance_lock(db), pytest.raises(BackupError, match="stop it first"):
        restore(backup, db, now=NOW)


def test_verify_names_what_is_wrong(tmp_path: Path) -> None:
    other = tmp_path / "plain.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(BackupError, match="not an aisd database"):
        verify_backup(other)
    with pytest.raises(BackupError, match="cannot be read"):
        verify_backup(tmp_path / "missing.db")


def test_cli_backup_and_restore(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AISD_DB_PATH", str(db))
    directory = tmp_path / "backups"
    directory.mkdir()
    assert main(["backup", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "integrity ok" in out
    assert "3 consents" in out
    (made,) = directory.iterdir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    broken = tmp_path / "broken.db"
    broken.write_bytes(made.read_bytes()[:5000])
    assert main(["restore", str(broken)]) == 1
    assert "restore refused, nothing was replaced" in capsys.readouterr().err
    assert main(["restore", "--json", str(made)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["previous"]
    assert shown["eventIdsAfter"] == 3
    # A previous database that cannot be read: the restore goes on, and says what it costs.
    db.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8000)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert main(["restore", str(made)]) == 0
    captured = capsys.readouterr()
    assert "previous database kept at" in captured.out
    assert "event ids after the backup's last one will be handed out again" in captured.err


def test_a_restored_database_never_hands_out_an_id_the_replaced_one_did(
    db: Path, tmp_path: Path
) -> None:
    backup = take_backup(db, tmp_path / "b.db", keep=7, now=NOW).path
    # Work after the backup: more events, and merged rows that moved the change sequence.
    anyio.run(_more, db, 4)
    with sqlite3.connect(db) as conn:
        heads = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        handed_out = {int(r[0]) for r in conn.execute("SELECT id FROM events")}
    assert heads["event_id"] == 3 + 4
    done = restore(backup, db, now=NOW)
    assert done.feed_heads == {"event_id": 3 + 4, "change_seq": heads["change_seq"]}
    anyio.run(_more, db, 2)
    with sqlite3.connect(db) as conn:
        after = [int(r[0]) for r in conn.execute("SELECT id FROM events ORDER BY id")]
    assert after[:3] == [1, 2, 3]
    # The restored feed jumps once, past every id the replaced database handed out.
    assert after[3:] == [8, 9]
    assert not handed_out - {1, 2, 3} & set(after)


def test_restoring_an_older_schema_carries_the_heads_through_its_migration(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.db"
    _create_at(old, version=9)
    current = tmp_path / "state" / "aisd.db"
    current.parent.mkdir()
    anyio.run(_database, current, 5)
    done = restore(old, current, now=NOW)
    assert done.summary.schema_version == LATEST_VERSION
    with sqlite3.connect(current) as conn:
        value = conn.execute("SELECT value FROM counters WHERE name = 'event_id'").fetchone()[0]
    assert value == 5


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_backup_and_restore_refuse_a_postgresql_daemon(
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    backup = take_backup(db, tmp_path / "b.db", keep=7, now=NOW).path
    before = _digest(db)
    monkeypatch.setenv("AISD_DB_PATH", str(db))
    monkeypatch.setenv("AISD_DATABASE_URL", "postgresql://aisd@db.internal/aisd")
    target = str(tmp_path / "elsewhere") if command == "backup" else str(backup)
    assert main([command, target]) == 2
    err = capsys.readouterr().err
    assert f"`aisd {command}` works on the SQLite database only" in err
    assert "pg_dump" in err
    assert _digest(db) == before
    assert not (tmp_path / "elsewhere").exists()
