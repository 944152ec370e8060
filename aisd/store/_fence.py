"""Fencing of once-per-cluster duties: the leader's term travels with the duty (a context
variable, so every store call the duty makes, in its task and the tasks it starts, carries
it), and a store several daemons share checks it inside each transaction.

A leader trusts its lease only until a local deadline, but a duty that passed that check can
still be frozen half-way (SIGSTOP, a stalled VM) and resume after another daemon took over.
Its writes then find the term changed in the database and are refused: the stale leader
writes nothing. SQLite, owned by one daemon, ignores the term.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from aisd.store.sqlite._errors import StoreError

__all__ = ["LeaderTerm", "StaleLeader", "current_term", "under_term"]


@dataclass(frozen=True, slots=True)
class LeaderTerm:
    """The leader lease a duty runs under: its holder and the term it took."""

    holder: str
    term: int


class StaleLeader(StoreError):
    """A duty's write was refused: the leader lease it runs under has lapsed or passed to
    another daemon (a new term). Nothing of the transaction was stored."""


_TERM: ContextVar[LeaderTerm | None] = ContextVar("aisd_leader_term", default=None)


def current_term() -> LeaderTerm | None:
    """The term the running duty holds, None outside any duty."""
    return _TERM.get()


@contextmanager
def under_term(term: LeaderTerm) -> Iterator[None]:
    """Run the block (and the tasks it starts) as a duty of ``term``."""
    token = _TERM.set(term)
    try:
        yield
    finally:
        _TERM.reset(token)
