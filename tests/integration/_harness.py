"""The in-process harness: a real store (SQLite, or PostgreSQL when the settings name one),
the sandbox over ASGI and the real client, wired by :func:`aisd.wiring.open_core` as the
daemon wires them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import anyio

from aisd.clock import SystemClock
from aisd.kontomatik import KontomatikClient
from aisd.pipeline import Pipeline, PipelineConfig, ReuseGate
from aisd.sandbox import Sandbox, SandboxConfig
from aisd.settings import Settings
from aisd.store import ConsentIn, ImportState, SqliteStore
from aisd.store.postgresql import PostgresStore
from aisd.wiring import Core, open_core
from tests import store_calls as sc

FINAL = (ImportState.SUCCESSFUL, ImportState.FAILED)
FAST = PipelineConfig(
    max_running=8,
    poll_min_seconds=0.05,
    poll_max_seconds=0.2,
    retry_base_seconds=0.05,
    retry_max_seconds=0.2,
    idle_recheck_seconds=0.05,
)


class ManualClock(SystemClock):
    """The wall clock plus an offset the test moves: a day passes in one call. Sleeps and
    spacing stay real (and short, with :data:`FAST`)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class Env:
    sandbox: Sandbox
    store: SqliteStore
    client: KontomatikClient
    tmp: Path
    clock: ManualClock
    core: Core

    def pipeline(self, config: PipelineConfig = FAST, gate: ReuseGate | None = None) -> Pipeline:
        return Pipeline(self.store, self.client, config, self.clock, gate=gate)

    async def submit(
        self,
        owner: str,
        *,
        multiple: bool = False,
        accounts: int | list[str] | None = None,
        max_imports: int | None = None,
        expires_in: timedelta = timedelta(days=180),
    ) -> str:
        minted = self.sandbox.mint_consent(owner, multiple_access=multiple, accounts=accounts)
        now = self.clock.now()
        outcome = await self.store.submit_consent(
            ConsentIn(
                owner_external_id=owner,
                session_id=minted.session_id,
                session_signature=minted.signature,
                multiple_access_id=minted.multiple_access_id,
                max_imports=max_imports,
            ),
            now=now,
            since=now.date() - timedelta(days=365),
            expires_at=now + expires_in,
        )
        return outcome.import_id


async def make_env(
    tmp_path: Path,
    *,
    clock: ManualClock | None = None,
    sandbox: Sandbox | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Env]:
    """An :class:`Env` on a fresh database, wired as the daemon wires its parts, closed
    afterwards. By default the sandbox's commands take 0.3 s."""
    clock = clock or ManualClock()
    sandbox = sandbox or Sandbox(SandboxConfig(command_seconds=0.3), clock=clock.now)
    settings = settings or Settings()
    async with open_core(
        settings,
        clock=clock,
        sandbox=sandbox,
        db_path=None if settings.database_url else tmp_path / "aisd.db",
        pipeline_config=FAST,
    ) as core:
        # Typed as the SQLite store, as the suites are: both backends implement aisd.store.Store.
        assert isinstance(core.store, (SqliteStore, PostgresStore))
        yield Env(sandbox, cast(SqliteStore, core.store), core.client, tmp_path, clock, core)


async def run_until_done(env: Env, pipeline: Pipeline, ids: list[str], limit: float = 20) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        with anyio.fail_after(limit):
            while True:
                records = [await sc.get_import(env.store, i) for i in ids]
                if all(
                    r and r.state in (ImportState.SUCCESSFUL, ImportState.FAILED) for r in records
                ):
                    break
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
