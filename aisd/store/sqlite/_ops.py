"""Webhook delivery cursors and the counts of /metrics in the SQLite store."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from aisd.store._ops_records import OpsCounts, WebhookBacklog, WebhookCursor
from aisd.store.sqlite._codec import dt_in, json_in, opt_dt_out
from aisd.store.sqlite._data_core import DataCore, fetch, one, scalar
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["OpsMethods"]


class OpsMethods:
    """Webhook cursors and metric counts, mixed into :class:`~aisd.store.sqlite.SqliteStore`."""

    async def webhook_register(self: DataCore, urls: Sequence[str], *, now: datetime) -> None:
        """See :meth:`aisd.store.Store.webhook_register`."""
        rows = [{"url": u, "now": dt_in(now)} for u in urls]
        async with self._transaction() as db:
            await db.executemany(Q["webhook_register"], rows)

    async def webhook_cursors(self: DataCore, urls: Sequence[str]) -> list[WebhookCursor]:
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
        return [found[u] for u in urls if u in found]

    async def webhook_advance(
        self: DataCore, url: str, *, expected: int, cursor: int, now: datetime | None
    ) -> bool:
        """See :meth:`aisd.store.Store.webhook_advance`."""
        params = {
            "url": url,
            "expected": expected,
            "cursor": cursor,
            "now": None if now is None else dt_in(now),
        }
        async with self._transaction() as db, db.execute(Q["webhook_advance"], params) as cur:
            return cur.rowcount == 1

    async def webhook_failed(
        self: DataCore,
        url: str,
        *,
        expected: int,
        attempts: int,
        next_attempt_at: datetime,
        error: str,
        now: datetime,
    ) -> bool:
        """See :meth:`aisd.store.Store.webhook_failed`."""
        params = {
            "url": url,
            "expected": expected,
            "attempts": attempts,
            "next_attempt_at": dt_in(next_attempt_at),
            "error": error,
            "now": dt_in(now),
        }
        async with self._transaction() as db, db.execute(Q["webhook_failed"], params) as cur:
            return cur.rowcount == 1

    async def webhook_rewind(self: DataCore, urls: Sequence[str], *, cursor: int) -> None:
        """See :meth:`aisd.store.Store.webhook_rewind`."""
        params = {"urls": json_in(list(urls)), "cursor": cursor}
        async with self._transaction() as db:
            await db.execute(Q["webhook_rewind"], params)

    async def webhook_backlog(
        self: DataCore, cursor: int, *, types: Collection[str] | None
    ) -> WebhookBacklog:
        """See :meth:`aisd.store.Store.webhook_backlog`."""
        params = {
            "cursor": cursor,
            "all_types": types is None,
            "types": json_in(sorted(types or ())),
        }
        row = await one(self._reader, "webhook_backlog", params)
        assert row is not None
        return WebhookBacklog(events=int(row["n"]), oldest_at=opt_dt_out(row["oldest"]))

    async def ops_counts(
        self: DataCore, *, now: datetime, expiring_within: timedelta, stale_after: timedelta
    ) -> OpsCounts:
        """See :meth:`aisd.store.Store.ops_counts`."""
        db = self._reader
        open_imports = {
            (str(row["kind"]), str(row["state"])): int(row["n"])
            for row in await fetch(db, "metrics_open_imports")
        }
        expiring = await scalar(
            db, "metrics_tokens_expiring", {"until": dt_in(now + expiring_within)}
        )
        stale = await scalar(db, "metrics_tokens_stale", {"cutoff": dt_in(now - stale_after)})
        return OpsCounts(
            open_imports=open_imports,
            tokens_expiring=int(expiring or 0),
            tokens_stale=int(stale or 0),
        )
