"""The WAL checkpoint, off the path of the transaction that commits.

SQLite's automatic checkpoint runs inside the commit that takes the log to 1,000 frames: that
commit copies the log into the database file and fsyncs it before it returns, so its caller (a
planner tick that dirtied 2,000 pages, a consent batch) waits for work durability does not need.
The writer connection runs with ``wal_autocheckpoint = 0`` and a :class:`Checkpointer` thread
on its own connection runs the same PASSIVE checkpoint on the same trigger instead, right after
the commit rather than inside it. The trigger is kept as SQLite's so the log grows, is copied
back and restarts exactly when it did before (what a full disk lets through depends on it).

A commit is durable once its frames are fsynced in the log (``synchronous=FULL``); when the
copy runs changes nothing about that. :func:`checkpoint_due` is the rule, pure.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path

import structlog

from aisd.store.sqlite._errors import storage_failure
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["AUTOCHECKPOINT_FRAMES", "Checkpointer", "checkpoint_due", "log_frames"]

log = structlog.get_logger("aisd.store")

# SQLite's default wal_autocheckpoint.
AUTOCHECKPOINT_FRAMES = 1000
# owner.forget waits as long as the store's own connections do (their busy_timeout).
_FORGET_WAIT_MS = 5000
# The WAL-index header at the start of the -shm file (https://sqlite.org/walformat.html, 4.5):
# mxFrame, the last valid frame of the log, at byte 16; nBackfill, the frames already copied
# into the database, at byte 96; both 32-bit in the machine's byte order.
_MX_FRAME = 16
_N_BACKFILL = 96
_HEADER_BYTES = 100


def checkpoint_due(frames: int, copied: int, threshold: int = AUTOCHECKPOINT_FRAMES) -> bool:
    """Whether SQLite's own rule would checkpoint now: the log holds at least ``threshold``
    frames and some are not copied yet."""
    return frames >= threshold and copied < frames


def log_frames(header: bytes) -> tuple[int, int]:
    """``(frames in the log, frames copied)`` from the first bytes of the -shm file; (0, 0)
    when it is too short (no log yet)."""
    if len(header) < _HEADER_BYTES:
        return 0, 0
    frames = int.from_bytes(header[_MX_FRAME : _MX_FRAME + 4], sys.byteorder)
    copied = int.from_bytes(header[_N_BACKFILL : _N_BACKFILL + 4], sys.byteorder)
    return frames, copied


class Checkpointer:
    """A thread with its own connection that checkpoints the WAL when :func:`checkpoint_due`.

    The store calls :meth:`wrote` after every commit that changed rows and :meth:`truncate`
    where it needs the log emptied now (``owner.forget``). Errors (a full disk) are logged once
    per streak and the checkpoint is tried again after the next write; they never reach a
    caller.

    The -shm header is read through one descriptor kept open until :meth:`release`: closing
    any descriptor of a file drops every POSIX lock the process holds on it, SQLite's -shm
    locks included, and another process connecting then believes it is the first, rebuilds
    the -shm this process has mapped and kills it with SIGBUS.
    """

    def __init__(self, path: Path, *, scratch: bool = False) -> None:
        self._shm = path.with_name(path.name + "-shm")
        self._shm_fd: int | None = None
        self._open_lock = threading.Lock()
        # Used only while holding _conn_lock; created here so a bad path fails the open.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.executescript(Q["checkpointer_pragmas"])
        if scratch:
            # A throwaway database's checkpoints need no fsync either.
            self._conn.executescript(Q["scratch_pragmas"])
        self._conn_lock = threading.Lock()
        self._changed = threading.Condition()
        self._writes = 0
        self._stopping = False
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="aisd-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """Report a committed write; never waits for a checkpoint. The thread is woken only
        when :func:`checkpoint_due`: reading the log's header is one ``pread``, while waking
        the thread after every commit cost the committing thread more than its statements."""
        if not checkpoint_due(*self._frames()):
            return
        with self._changed:
            self._writes += 1
            self._changed.notify()

    def truncate(self) -> bool:
        """Checkpoint the whole log and empty the file now, after a checkpoint already
        running; blocking (call it from a worker thread). Waits up to 5 s for readers and the
        writer, like the store's other connections. Returns whether the log is empty: a reader
        holding an old snapshot all that time keeps it from emptying."""
        return self._checkpoint("wal_checkpoint_truncate", wait_ms=_FORGET_WAIT_MS)

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress) and close its connection;
        blocking. Call :meth:`release` once the process's other connections are closed."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        with self._conn_lock:
            self._conn.close()

    def release(self) -> None:
        """Close the -shm descriptor: only after every connection of this process to the
        database is closed (see the class's docstring)."""
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None

    def _loop(self) -> None:
        seen = 0
        while True:
            with self._changed:
                while self._writes == seen and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                seen = self._writes
            if checkpoint_due(*self._frames()):
                self._checkpoint("wal_checkpoint_passive", wait_ms=0)

    def _frames(self) -> tuple[int, int]:
        try:
            if self._shm_fd is None:
                # Both the committing thread and this one read the header: one descriptor
                # only, since closing a second would drop the process's -shm locks.
                with self._open_lock:
                    if self._shm_fd is None:
                        self._shm_fd = os.open(self._shm, os.O_RDONLY | os.O_CLOEXEC)
            return log_frames(os.pread(self._shm_fd, _HEADER_BYTES, 0))
        except OSError:
            return 0, 0

    def _checkpoint(self, name: str, *, wait_ms: int) -> bool:
        with self._conn_lock:
            try:
                self._conn.execute(Q["set_busy_timeout"].format(ms=int(wait_ms)))
                busy, frames, copied = self._conn.execute(Q[name]).fetchone()
            except sqlite3.Error as exc:
                if not self._failing:
                    reason = storage_failure(exc) or type(exc).__name__
                    log.warning("store.checkpoint_failed", reason=reason)
                self._failing = True
                return False
            if self._failing:
                log.info("store.checkpoint_recovered")
            self._failing = False
        return not busy and frames == copied
