"""``aisd replay``: rebuild the merged data from the kept raw replies, offline.

A fix to parsing or merging then repairs history without spending one bank access. The
replies are re-parsed in the order their imports finished and merged exactly as the pipeline
merged them; the import rows, tokens, billing and the event feed are left as they were.
"""

from __future__ import annotations

import sys

import anyio
import structlog

from aisd.instance import InstanceLocked, instance_lock
from aisd.kontomatik import KontomatikError, gunzip_reply, parse_command
from aisd.settings import Settings
from aisd.store import open_store

log = structlog.get_logger("aisd.replay")


async def replay(settings: Settings) -> tuple[int, int]:
    """Rebuild the merged view; returns (imports replayed, replies that failed to parse)."""
    replayed = failed = 0
    async with open_store(settings.db_path) as store:
        replies = await store.raw_replies()
        await store.reset_merged_data()
        for import_id, coverage_start, raw in replies:
            try:
                _, command = parse_command(gunzip_reply(raw), max_bytes=settings.max_reply_bytes)
            except KontomatikError as exc:
                failed += 1
                log.error("replay.unreadable", importId=import_id, error=exc.name)
                continue
            if command.result is None:
                failed += 1
                log.error("replay.no_result", importId=import_id)
                continue
            stats = await store.replay_result(
                import_id, command.result, coverage_start=coverage_start
            )
            replayed += 1
            log.info(
                "replay.merged",
                importId=import_id,
                transactions=stats.transactions,
                added=stats.added,
                modified=stats.modified,
                removed=stats.removed,
            )
    return replayed, failed


def main(settings: Settings) -> int:
    """Entry point of ``aisd replay``; refuses to run beside a daemon on the same database."""
    try:
        with instance_lock(settings.db_path):
            replayed, failed = anyio.run(replay, settings, backend="asyncio")
    except InstanceLocked as exc:
        print(f"aisd replay: {exc}; stop the daemon first", file=sys.stderr)
        return 1
    print(f"replayed {replayed} imports, {failed} unreadable")
    return 1 if failed else 0
