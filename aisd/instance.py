"""One process at a time per database: an advisory lock beside the SQLite file.

Two daemons on one database would both plan refreshes and break the quota; ``aisd replay``
rewrites the merged data and must not race a running daemon. Both take this lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class InstanceLocked(RuntimeError):
    """Another process holds the database."""


@contextmanager
def instance_lock(db_path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<db_path>.lock`` for the duration of the block.

    Raises:
        InstanceLocked: another process holds it.
    """
    lock_path = Path(f"{db_path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstanceLocked(f"another aisd process is using {db_path}") from None
        yield
    finally:
        os.close(fd)
