"""The WAL checkpoint, off the path of the transaction that commits.

SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000 pages: that
commit copies every page of the log into the database file and fsyncs it before it returns, so
the caller waiting for it (a planner tick that dirtied 2,000 pages, a consent batch) waits for
work that durability does not need. The writer connection runs with ``wal_autocheckpoint = 0``
and a :class:`Checkpointer` thread on its own connection copies the log back instead: a PASSIVE
checkpoint (it never blocks the writer or a reader) at most once per ``min_interval`` while
writes come, and a TRUNCATE once writes have stopped for ``idle`` seconds, which empties the
``-wal`` file. A commit is durable once its frames are fsynced in the log (``synchronous=FULL``);
when the checkpoint runs changes nothing about that.

:func:`next_step` is the rule, pure; the thread only follows it.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from aisd.store.sqlite._errors import storage_failure
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["CheckpointPolicy", "CheckpointState", "Checkpointer", "Step", "next_step"]

log = structlog.get_logger("aisd.store")
# owner.forget waits as long as the store's own connections do (their busy_timeout).
_FORGET_WAIT_MS = 5000


class Step(enum.Enum):
    """What the checkpointer does next."""

    PASSIVE = "passive"
    TRUNCATE = "truncate"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When the log is copied back.

    Attributes:
        min_interval: seconds between the starts of two checkpoints: bounds their fsyncs of the
            database file to one per interval while writes keep coming, and the log to about
            that many seconds of writes.
        idle: seconds without a write before the log file is truncated.
    """

    min_interval: float = 1.0
    idle: float = 5.0


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """What the checkpointer knows.

    Attributes:
        pending: frames may be in the log that no checkpoint has copied yet.
        truncated: the log file has been emptied since the last write.
        last_write: when the newest write was reported (monotonic seconds).
        last_checkpoint: when the newest checkpoint started, or None before the first.
        last_truncate: when the newest truncation was tried, or None.
    """

    pending: bool = False
    truncated: bool = True
    last_write: float = 0.0
    last_checkpoint: float | None = None
    last_truncate: float | None = None


def next_step(state: CheckpointState, policy: CheckpointPolicy, now: float) -> tuple[Step, float]:
    """The next step at ``now``, and for :attr:`Step.WAIT` how long to wait at most before
    asking again (``inf``: until the next write)."""
    if state.pending:
        last = state.last_checkpoint
        since = policy.min_interval if last is None else max(0.0, now - last)
        if since >= policy.min_interval:
            return Step.PASSIVE, 0.0
        return Step.WAIT, policy.min_interval - since
    if state.truncated:
        return Step.WAIT, float("inf")
    # A truncation that found a reader in the way is tried again an idle period later.
    quiet = max(0.0, now - max(state.last_write, state.last_truncate or state.last_write))
    if quiet >= policy.idle:
        return Step.TRUNCATE, 0.0
    return Step.WAIT, policy.idle - quiet


class Checkpointer:
    """A thread with its own connection that checkpoints the WAL as :func:`next_step` says.

    The store calls :meth:`wrote` after every commit that changed rows and :meth:`truncate`
    where it needs the log emptied now (``owner.forget``). Errors (a full disk) are logged once
    per streak and the step is tried again later; they never reach a caller.
    """

    def __init__(self, path: Path, policy: CheckpointPolicy | None = None) -> None:
        self._policy = policy or CheckpointPolicy()
        # Used only while holding _conn_lock; created here so a bad path fails the open.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.executescript(Q["checkpointer_pragmas"])
        self._conn_lock = threading.Lock()
        self._changed = threading.Condition()
        self._state = CheckpointState()
        self._stopping = False
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="aisd-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """Report a committed write (cheap: no I/O, never blocks on a checkpoint)."""
        with self._changed:
            self._state = replace(
                self._state, pending=True, truncated=False, last_write=time.monotonic()
            )
            self._changed.notify()

    def truncate(self) -> bool:
        """Checkpoint the whole log and empty the file now, after a checkpoint already
        running; blocking (call it from a worker thread). Waits up to 5 s for readers and
        the writer, like the store's other connections. Returns whether the log is empty: a
        reader holding an old snapshot all that time keeps it from emptying."""
        with self._changed:
            before = self._state
        done = self._checkpoint("wal_checkpoint_truncate", wait_ms=_FORGET_WAIT_MS)
        with self._changed:
            if done and self._state.last_write == before.last_write:
                self._state = replace(self._state, pending=False, truncated=True)
        return done

    def close(self) -> None:
        """Stop the thread (after the step in progress) and close its connection; blocking."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()
        with self._conn_lock:
            self._conn.close()

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                now = time.monotonic()
                step, wait = next_step(self._state, self._policy, now)
                if step == Step.WAIT:
                    self._changed.wait(None if wait == float("inf") else wait)
                    continue
                before = self._state
                if step == Step.PASSIVE:
                    self._state = replace(before, pending=False, last_checkpoint=now)
                else:
                    self._state = replace(before, last_truncate=now)
            name = "wal_checkpoint_passive" if step == Step.PASSIVE else "wal_checkpoint_truncate"
            done = self._checkpoint(name, wait_ms=0)
            with self._changed:
                if self._state.last_write != before.last_write:
                    continue  # a write came meanwhile: the state already says what is left
                if step == Step.PASSIVE and not done:
                    # A reader kept part of the log: copy the rest at the next interval.
                    self._state = replace(self._state, pending=True)
                elif step == Step.TRUNCATE and done:
                    self._state = replace(self._state, pending=False, truncated=True)

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
