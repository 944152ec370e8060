"""Billing inputs from the SQLite store: token lives and their successful imports."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from aisd.billing import BilledImport, ImportKindName, TokenLife
from aisd.store.sqlite._codec import dt_in, dt_out, opt_dt_out
from aisd.store.sqlite._data_core import DataCore, fetch

__all__ = ["BillingMethods"]


class BillingMethods:
    """``billing_inputs``, mixed into :class:`~aisd.store.sqlite.SqliteStore`."""

    async def billing_inputs(
        self: DataCore, *, start: datetime | None = None, end: datetime | None = None
    ) -> tuple[list[TokenLife], list[BilledImport]]:
        """See :meth:`aisd.store.Store.billing_inputs`."""
        params = {
            "start": None if start is None else dt_in(start),
            "end": None if end is None else dt_in(end),
        }
        tokens = [
            TokenLife(
                token_id=row["token_id"],
                owner_external_id=row["owner_external_id"],
                created_at=dt_out(row["created_at"]),
                expires_at=dt_out(row["expires_at"]),
                ended_at=opt_dt_out(row["ended_at"]),
            )
            for row in await fetch(self._reader, "billing_tokens", params)
        ]
        imports = [
            BilledImport(
                token_id=row["token_id"],
                finished_at=dt_out(row["finished_at"]),
                kind=cast(ImportKindName, row["kind"]),
            )
            for row in await fetch(self._reader, "billing_imports", params)
        ]
        return tokens, imports
