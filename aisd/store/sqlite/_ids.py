"""The opaque ids of tokens and imports."""

from __future__ import annotations

import secrets

__all__ = ["new_id"]


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix`` and 16 random hex digits.

    Random, never derived from a secret: ids appear in logs, events and on the socket.
    """
    return f"{prefix}{secrets.token_hex(8)}"
