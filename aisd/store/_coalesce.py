"""Coalescing concurrent writes into shared batches, for any backend.

Whoever finds no batch being written becomes the writer: it takes every item waiting at that
moment (its own among them) and writes them together; the others wait for that batch, or
become the next writer when theirs arrived too late for it. Nobody returns before the batch
holding their item has been written, so a backend that commits a batch durably answers each
caller only once its item is durable. What an item's write produced (a result, an error of its
own) is the backend's to record on the item; an error of the whole batch is raised to each of
its callers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Coalescer"]

T = TypeVar("T")


@dataclass(slots=True)
class _Waiter(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


class Coalescer(Generic[T]):
    """Batches of the items callers :meth:`join` concurrently (see the module docstring).

    Args:
        write: Writes one batch (at most ``max_batch`` items, in arrival order).
        max_batch: A longer queue waits for the next batch: one batch stays short.
        lock: Held while a batch is taken and written, when other writers share the database
            connection; items arriving while it is awaited join the batch.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int,
        lock: anyio.Lock | None = None,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._lock = lock
        self._pending: list[_Waiter[T]] = []
        self._writing = False
        self._written = anyio.Event()

    @property
    def busy(self) -> bool:
        """True while items wait or a batch is being written."""
        return self._writing or bool(self._pending)

    async def until_idle(self) -> None:
        """Return once no item waits and no batch is being written."""
        while self.busy:
            await self._written.wait()

    async def join(self, item: T) -> None:
        """Write ``item`` in the next batch; returns once that batch is written.

        Raises:
            BaseException: what writing the batch raised, to every caller in it.
        """
        waiter = _Waiter(item)
        self._pending.append(waiter)
        while not waiter.done:
            if self._writing:
                await self._written.wait()
                continue
            self._writing = True
            try:
                # One turn of the event loop first: items whose requests were read in the same
                # turn join this batch instead of waiting for the next one, so a burst of answers
                # followed by a burst of requests does not alternate batches of 1 and N-1.
                await anyio.lowlevel.cancel_shielded_checkpoint()
                if self._lock is None:
                    await self._write_next()
                else:
                    async with self._lock:
                        await self._write_next()
            finally:
                self._writing = False
                written, self._written = self._written, anyio.Event()
                written.set()
        if waiter.error is not None:
            raise waiter.error

    async def _write_next(self) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        try:
            await self._write([waiter.item for waiter in batch])
        except BaseException as exc:
            for waiter in batch:
                waiter.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for waiter in batch:
                waiter.done = True
