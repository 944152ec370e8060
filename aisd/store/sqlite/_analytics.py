"""Kontomatik's analytical scores per owner in the SQLite store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import aiosqlite

from aisd.kontomatik import ModelScore
from aisd.store.sqlite._codec import dt_in, opt_dt_out
from aisd.store.sqlite._data_core import DataCore, fetch
from aisd.store.sqlite._queries import QUERIES as Q

__all__ = ["AnalyticsMethods", "owner_scores"]


class AnalyticsMethods:
    """``save_owner_scores``, mixed into both stores."""

    async def save_owner_scores(
        self: DataCore,
        owner_external_id: str,
        scores: Sequence[ModelScore],
        *,
        import_id: str | None,
        now: datetime,
    ) -> None:
        """See :meth:`aisd.store.Store.save_owner_scores`."""
        rows = [
            {
                "external_id": owner_external_id,
                "model_id": s.model_id,
                "retrained_at": None if s.retrained_at is None else dt_in(s.retrained_at),
                "score": s.score,
                "percentile": s.percentile,
                "tier": s.tier,
                "import_id": import_id,
                "now": dt_in(now),
            }
            for s in scores
        ]
        async with self._transaction() as db:
            await db.executemany(Q["upsert_owner_score"], rows)


async def owner_scores(db: aiosqlite.Connection, owner_external_id: str) -> list[ModelScore]:
    """The owner's kept scores, by model id."""
    return [
        ModelScore(
            model_id=row["model_id"],
            retrained_at=opt_dt_out(row["retrained_at"]),
            score=row["score"],
            percentile=row["percentile"],
            tier=row["tier"],
        )
        for row in await fetch(db, "owner_scores", {"external_id": owner_external_id})
    ]
