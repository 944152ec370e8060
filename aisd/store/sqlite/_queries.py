"""Named SQL blocks, loaded once from ``queries.sql``, ``queries_data.sql`` and ``ops.sql``
(aiosql-style ``-- name: x`` headers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from types import MappingProxyType

__all__ = ["QUERIES", "parse_named_blocks"]

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def parse_named_blocks(text: str) -> dict[str, str]:
    """Split SQL text into blocks named by ``-- name: <name>`` lines.

    Args:
        text: the file's content; lines before the first name are a preamble and dropped.

    Returns:
        Each name mapped to its statement(s), stripped of surrounding blank lines.

    Raises:
        ValueError: a name appears twice or a block is empty.
    """
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line.strip())
        if match:
            name = match.group(1)
            if name in blocks:
                raise ValueError(f"duplicate query name {name!r}")
            current = blocks[name] = []
        elif current is not None:
            current.append(line)
    out = {name: "\n".join(lines).strip() for name, lines in blocks.items()}
    empty = [name for name, sql in out.items() if not sql]
    if empty:
        raise ValueError(f"empty query blocks: {empty}")
    return out


def _load(*names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        blocks = parse_named_blocks(
            files("aisd.store.sqlite").joinpath(name).read_text(encoding="utf-8")
        )
        clash = sorted(set(out) & set(blocks))
        if clash:
            raise ValueError(f"query names defined twice: {clash}")
        out.update(blocks)
    return out


QUERIES: Mapping[str, str] = MappingProxyType(
    _load("queries.sql", "queries_data.sql", "queries_pipeline.sql", "ops.sql")
)
