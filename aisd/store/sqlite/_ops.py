"""Webhook delivery cursors in the stores."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

import aiosqlite

from aisd.store._ops_records import WebhookBacklog, WebhookCursor
from aisd.store._requests import (
    WebhookAdvance,
    WebhookRegister,
    WebhookRewind,
    WebhookWrite,
)
from aisd.store.sqlite._codec import dt_in, json_in, opt_dt_out
from aisd.store.sqlite._data_core import DataCore, fetch, one
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["OpsMethods"]


class OpsMethods:
    """Webhook cursors, mixed into both stores."""

    async def webhook_cursors(
        self: DataCore,
        urls: Sequence[str],
        *,
        backlog: bool = False,
        types: Collection[str] | None = None,
    ) -> list[WebhookCursor]:
        """See :meth:`aisd.store.Store.webhook_cursors`."""
        found = {
            row["url"]: WebhookCursor(
                url=row["url"],
                cursor=int(row["cursor"]),
                attempts=int(row["attempts"]),
                next_attempt_at=opt_dt_out(row["next_attempt_at"]),
                last_success_at=opt_dt_out(row["last_success_at"]),
                last_error=row["last_error"],
                last_error_at=opt_dt_out(row["last_error_at"]),
            )
            for row in await fetch(self._reader, "webhook_rows", {"urls": json_in(list(urls))})
        }
        cursors = [found[u] for u in urls if u in found]
        if not backlog:
            return cursors
        return [replace(c, backlog=await _backlog(self._reader, c.cursor, types)) for c in cursors]

    async def webhook_write(self: DataCore, write: WebhookWrite, *, now: datetime) -> bool:
        """See :meth:`aisd.store.Store.webhook_write`."""
        ts = dt_in(now)
        async with self._transaction() as db:
            if isinstance(write, WebhookRegister):
                await db.executemany(
                    Q["webhook_register"], [{"url": u, "now": ts} for u in write.urls]
                )
                return True
            if isinstance(write, WebhookRewind):
                params = {"urls": json_in(list(write.urls)), "cursor": write.cursor}
                await db.execute(Q["webhook_rewind"], params)
                return True
            if isinstance(write, WebhookAdvance):
                name = "webhook_advance"
                params = {
                    "url": write.url,
                    "expected": write.expected,
                    "cursor": write.cursor,
                    "now": ts if write.delivered else None,
                }
            else:
                name = "webhook_failed"
                params = {
                    "url": write.url,
                    "expected": write.expected,
                    "attempts": write.attempts,
                    "next_attempt_at": dt_in(write.next_attempt_at),
                    "error": write.error,
                    "now": ts,
                }
            async with db.execute(Q[name], params) as cur:
                return cur.rowcount == 1


async def _backlog(
    db: aiosqlite.Connection, cursor: int, types: Collection[str] | None
) -> WebhookBacklog:
    params = {"cursor": cursor, "all_types": types is None, "types": json_in(sorted(types or ()))}
    row = await one(db, "webhook_backlog", params)
    assert row is not None
    return WebhookBacklog(events=int(row["n"]), oldest_at=opt_dt_out(row["oldest"]))
