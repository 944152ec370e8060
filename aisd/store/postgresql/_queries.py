"""Named SQL blocks of the PostgreSQL backend (``-- name: x`` headers, ``%(name)s``
parameters), loaded once."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from types import MappingProxyType

from aisd.store.sqlite._queries import parse_named_blocks

__all__ = ["QUERIES"]


def _load(*names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        text = files("aisd.store.postgresql").joinpath(name).read_text(encoding="utf-8")
        blocks = parse_named_blocks(text)
        clash = sorted(set(out) & set(blocks))
        if clash:
            raise ValueError(f"query names defined twice: {clash}")
        out.update(blocks)
    return out


QUERIES: Mapping[str, str] = MappingProxyType(
    _load(
        "queries.sql", "queries_data.sql", "queries_pipeline.sql", "queries_cluster.sql", "ops.sql"
    )
)
