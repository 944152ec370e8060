"""``aisd replay``: rebuild the merged data from the kept raw replies, offline.

A fix to parsing or merging then repairs history without spending one bank access. The
replies are re-parsed in the order their imports finished and merged exactly as the pipeline
merged them; the import rows, tokens, billing and the event feed are left as they were.
"""

from __future__ import annotations

import sys
from datetime import date

import anyio
import structlog

from aisd.instance import InstanceLocked, instance_lock
from aisd.kontomatik import ImportResult, KontomatikError, gunzip_reply, parse_command
from aisd.merge import rebuild
from aisd.settings import Settings
from aisd.store import open_store

log = structlog.get_logger("aisd.replay")


async def replay(settings: Settings) -> tuple[int, int]:
    """Rebuild the merged view; returns (imports replayed, replies that could not be used).

    Per owner, the kept replies are re-parsed and merged from nothing in the order their
    imports finished (:func:`aisd.merge.rebuild`, pure); the outcome is then merged over all
    dates into the stored rows, so rows that did not change keep their ids and the change feed
    reports only the repair.
    """
    replayed = failed = 0
    async with open_store(settings.db_path) as store:
        after: str | None = None
        while (batch := await store.raw_replies(after_owner=after)) is not None:
            owner = after = batch.owner_external_id
            results: list[tuple[ImportResult, date]] = []
            last_import: str | None = None
            for import_id, coverage_start, raw in batch.replies:
                try:
                    _, command = parse_command(
                        gunzip_reply(raw), max_bytes=settings.max_reply_bytes
                    )
                except KontomatikError as exc:
                    failed += 1
                    log.error("replay.unreadable", importId=import_id, error=exc.name)
                    continue
                if command.result is None:
                    failed += 1
                    log.error("replay.no_result", importId=import_id)
                    continue
                results.append((command.result, coverage_start))
                last_import = import_id
            if last_import is None:
                continue
            stats = await store.replay_result(
                last_import, rebuild(results), coverage_start=date.min
            )
            replayed += len(results)
            log.info(
                "replay.merged",
                ownerExternalId=owner,
                imports=len(results),
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
