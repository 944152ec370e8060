"""``aisd backup`` and ``aisd restore``: verified copies of the SQLite database.

A backup is taken online, beside a running daemon, with SQLite's backup API in one step: it
copies one consistent snapshot (in WAL mode the daemon's writes go on meanwhile), never a
half-written file as a plain copy could. The copy becomes a self-contained file (no ``-wal``),
is written with mode 0600 under a temporary name, checked (``PRAGMA integrity_check``, a schema
version this aisd knows, the core tables and their counts) and only then renamed into place.

A restore runs while the daemon is stopped (it takes the daemon's instance lock), verifies the
backup the same way, copies it beside the database, moves the current database (with its
``-wal`` and ``-shm``) aside and puts the copy in its place: a corrupt or truncated backup is
refused before anything is touched. The restored copy continues the event and change feeds
after the last ids the replaced database handed out, so no id a receiver has seen is handed out
again for another event. On PostgreSQL backups are the server's
business: ``pg_dump`` or base backups with WAL archiving.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aisd.instance import InstanceLocked, instance_lock
from aisd.store.sqlite import LATEST_VERSION, migrate
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = [
    "BackupError",
    "BackupSummary",
    "Restored",
    "restore",
    "take_backup",
    "verify_backup",
]

_HEADER = b"SQLite format 3\x00"
_REQUIRED_TABLES = ("owners", "consents", "tokens", "imports", "accounts", "transactions", "events")
# Files `aisd backup DIRECTORY` names, and the only ones its rotation ever deletes.
_ROTATED = re.compile(r"aisd-\d{8}T\d{6}Z\.db")


class BackupError(Exception):
    """A backup could not be taken, verified or restored; the message says why."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a verified backup holds."""

    path: Path
    schema_version: int
    size_bytes: int
    counts: dict[str, int]

    def as_json(self) -> dict[str, object]:
        """The summary as ``--json`` prints it."""
        return {
            "path": str(self.path),
            "schemaVersion": self.schema_version,
            "sizeBytes": self.size_bytes,
            "integrity": "ok",
            "counts": self.counts,
        }

    def describe(self) -> str:
        """One line for people."""
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        return (
            f"{self.path}: schema version {self.schema_version}, {self.size_bytes} bytes, "
            f"integrity ok; {counts}"
        )


def _create_private(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: sqlite3.Connection, destination: Path) -> None:
    """The whole database in one backup step (one consistent snapshot), made standalone."""
    _create_private(destination)
    with closing(sqlite3.connect(destination, isolation_level=None)) as target:
        source.backup(target)
        target.execute(Q["backup_standalone"]).fetchall()
    _fsync(destination)


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        yield conn


def verify_backup(path: Path) -> BackupSummary:
    """Check that ``path`` is a whole, uncorrupted aisd database of a known schema version.

    Raises:
        BackupError: it is missing, not SQLite, truncated or corrupt, of an unknown schema
            version, or without aisd's tables.
    """
    try:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
    except OSError as exc:
        raise BackupError(f"{path}: cannot be read ({exc.strerror})") from None
    if header != _HEADER:
        raise BackupError(f"{path}: not an SQLite database")
    try:
        with _read_only(path) as conn:
            problems = [row[0] for row in conn.execute(Q["backup_integrity"]).fetchall()]
            if problems != ["ok"]:
                raise BackupError(f"{path}: integrity check failed: {problems[0]}")
            version = int(conn.execute(Q["get_user_version"]).fetchone()[0])
            tables = {row[0] for row in conn.execute(Q["backup_tables"]).fetchall()}
            missing = [t for t in _REQUIRED_TABLES if t not in tables]
            if version < 1 or missing:
                raise BackupError(f"{path}: not an aisd database (missing {', '.join(missing)})")
            if version > LATEST_VERSION:
                raise BackupError(
                    f"{path}: schema version {version} is newer than this aisd knows "
                    f"({LATEST_VERSION})"
                )
            counts = {str(row[0]): int(row[1]) for row in conn.execute(Q["backup_counts"])}
    except sqlite3.DatabaseError as exc:
        # Truncated or overwritten pages: SQLite's own words say which.
        raise BackupError(f"{path}: corrupt or truncated ({exc})") from None
    return BackupSummary(path, version, path.stat().st_size, counts)


def take_backup(db_path: Path, target: Path, *, keep: int, now: datetime) -> BackupSummary:
    """Copy the database at ``db_path`` to ``target`` and verify the copy.

    Args:
        db_path: the live database (the daemon may be running).
        target: a file that does not exist yet, or a directory: then the copy is named
            ``aisd-YYYYMMDDTHHMMSSZ.db`` inside it and only the newest ``keep`` of those stay.
        keep: how many timestamped backups a directory keeps.
        now: the time in the file name.

    Raises:
        BackupError: nothing was written (or the partial copy was removed), and why.
    """
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path} (see AISD_DB_PATH)")
    rotate = target.is_dir()
    dest = target / f"aisd-{now:%Y%m%dT%H%M%SZ}.db" if rotate else target
    if dest.exists():
        raise BackupError(f"{dest} exists; a backup never overwrites a file")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    partial = dest.with_name(dest.name + ".partial")
    try:
        with closing(sqlite3.connect(db_path, isolation_level=None)) as source:
            source.executescript(Q["backup_source_pragmas"])
            _copy(source, partial)
        summary = verify_backup(partial)
        os.replace(partial, dest)
        _fsync(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if rotate:
        _rotate(target, keep)
    return BackupSummary(dest, summary.schema_version, summary.size_bytes, summary.counts)


def _rotate(directory: Path, keep: int) -> None:
    backups = sorted(p for p in directory.iterdir() if _ROTATED.fullmatch(p.name))
    for old in backups[:-keep]:
        old.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore did.

    Attributes:
        summary: what the restored database holds.
        previous: where the replaced database was kept (None: there was none).
        feed_heads: the last event id and change sequence value the replaced database had
            handed out, which the restored one continues after (None: there was no previous
            database, or it could not be read, so ids after the backup's may repeat).
    """

    summary: BackupSummary
    previous: Path | None
    feed_heads: dict[str, int] | None


def _feed_heads(path: Path) -> dict[str, int] | None:
    """The feed heads of the database being replaced, if it can still be read."""
    try:
        with _read_only(path) as conn:
            return {str(n): int(v) for n, v in conn.execute(Q["backup_feed_heads"]).fetchall()}
    except sqlite3.Error:
        return None


def _carry_feed_heads(staging: Path, heads: dict[str, int]) -> None:
    """Make the restored copy hand out ids after ``heads``. The copy is migrated first: an
    older schema would otherwise rebuild its counters from its own rows when the daemon
    migrates it."""
    migrate(staging)
    with closing(sqlite3.connect(staging, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for name, value in heads.items():
            conn.execute(Q["restore_carry_head"], {"name": name, "value": value})
        conn.execute("COMMIT")
    _fsync(staging)


def restore(backup: Path, db_path: Path, *, now: datetime) -> Restored:
    """Put a verified backup in place of the database; the daemon must be stopped. The
    restored database continues the event and change feeds after the replaced one's heads.

    Raises:
        BackupError: the daemon runs, or the backup is refused; nothing was replaced.
    """
    try:
        with instance_lock(db_path):
            summary = verify_backup(backup)
            staging = db_path.with_name(db_path.name + ".restoring")
            try:
                with _read_only(backup) as source:
                    _copy(source, staging)
                verify_backup(staging)
                heads = _feed_heads(db_path) if db_path.exists() else None
                if heads is not None:
                    _carry_feed_heads(staging, heads)
            except BaseException:
                staging.unlink(missing_ok=True)
                raise
            aside = None
            if db_path.exists():
                aside = db_path.with_name(f"{db_path.name}.before-restore-{now:%Y%m%dT%H%M%SZ}")
                # The -wal belongs to the old file: left beside the new one, SQLite would
                # replay it into the restored database.
                for suffix in ("-wal", "-shm"):
                    companion = Path(f"{db_path}{suffix}")
                    if companion.exists():
                        os.replace(companion, Path(f"{aside}{suffix}"))
                os.replace(db_path, aside)
            os.replace(staging, db_path)
            _fsync(db_path.parent)
    except InstanceLocked:
        raise BackupError(
            f"the daemon is running on {db_path}: stop it first (systemctl stop aisd)"
        ) from None
    with _read_only(db_path) as conn:
        version = int(conn.execute(Q["get_user_version"]).fetchone()[0])
    return Restored(
        BackupSummary(db_path, version, db_path.stat().st_size, summary.counts), aside, heads
    )
