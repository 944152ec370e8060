"""The opaque ids of tokens, imports and claimers."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id"]

# The id's first 6 hex digits count seconds (wrapping every 194 days): ids made close together
# sort together, so a batch of inserts (a tick's 500 queued refreshes) lands on a few pages at
# one place in each index on ids instead of one random page per row. The other 10 are random:
# as unlikely to collide as 16 random digits over the daemon's life, and as unguessable as an
# id needs to be (ids are not secrets).
_TIME_DIGITS = 6
_TIME_MASK = (1 << (4 * _TIME_DIGITS)) - 1
_RANDOM_BYTES = (16 - _TIME_DIGITS) // 2


def new_id(prefix: str, *, at: float | None = None) -> str:
    """A fresh id: ``prefix`` and 16 hex digits, 6 from the time (``at``, seconds since the
    epoch; now by default) and 10 random.

    Random, never derived from a secret: ids appear in logs, events and on the socket.
    """
    seconds = int(time.time() if at is None else at) & _TIME_MASK
    return f"{prefix}{seconds:0{_TIME_DIGITS}x}{secrets.token_hex(_RANDOM_BYTES)}"
