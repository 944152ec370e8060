"""A Default Import whose reply arrives while the database is down for longer than the claim
lease: its sender stores the command id late, an adopter waits for it, and the import ends
with the one command the session allows. Time is a :class:`VirtualClock`: no test sleeps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from aisd._simulation_world import watched
from aisd.clock import VirtualClock
from aisd.kontomatik import Command, KontomatikClient, Session
from aisd.phases import Step
from aisd.pipeline import LOST_IMPORT, Pipeline, PipelineConfig
from aisd.sandbox import Sandbox, SandboxConfig
from aisd.settings import Settings
from aisd.store import (
    ConsentIn,
    ImportRecord,
    ImportState,
    LeaseLost,
    StepWrite,
    StorageUnavailable,
    Store,
)
from aisd.wiring import Core, open_core
from tests import store_calls as sc

pytestmark = pytest.mark.anyio

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = 6.0
CLUSTER = PipelineConfig(
    max_running=4,
    poll_min_seconds=2.0,
    poll_max_seconds=5.0,
    idle_recheck_seconds=0.01,
    lease_seconds=LEASE,
)


@dataclass
class Outage:
    """The database as one daemon reaches it: every call fails while ``on``."""

    on: bool = False
    # Only these store calls fail while ``on`` (empty: every call).
    only: frozenset[str] = frozenset()
    command_refused: anyio.Event = field(default_factory=anyio.Event)
    late_refused: list[str] = field(default_factory=list)


class Reach:
    """A daemon's way to the shared store: cut off during ``outage``; tells when an import
    is adopted with a reply that may still arrive."""

    def __init__(self, store: Store, outage: Outage | None = None) -> None:
        self._store = store
        self._outage = outage or Outage()
        self.adopted = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not inspect.iscoroutinefunction(target):
            return target

        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            command = _command_write(name, args, kwargs)
            if self._outage.on and (not self._outage.only or name in self._outage.only):
                if command is not None:
                    self._outage.command_refused.set()
                raise StorageUnavailable("server closed the connection unexpectedly")
            try:
                result = await target(*args, **kwargs)
            except LeaseLost:
                if command is not None and command.command_id is not None:
                    self._outage.late_refused.append(command.command_id)
                raise
            if name == "claim_work" and any(job.reply_may_arrive for job in result):
                self.adopted.set()
            return result

        return call


def _command_write(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepWrite | None:
    """The command id's write in a store call: an ``advance`` of it, or the access's end it
    is recorded with (the pipeline's way)."""
    if name == "advance":
        write = args[1]
    elif name == "end_access" and kwargs.get("step") is not None:
        write = kwargs["step"].write
    else:
        return None
    return write if getattr(write, "step", None) == Step.COMMAND else None


class HeldReply:
    """The client whose Default Import reply stays in flight until ``release`` is set."""

    def __init__(self, client: KontomatikClient) -> None:
        self._client = client
        self.sent = anyio.Event()
        self.release = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def default_import(self, session: Session, since: date) -> Command:
        command = await self._client.default_import(session, since)
        self.sent.set()
        await self.release.wait()
        return command


@dataclass
class World:
    core: Core
    clock: VirtualClock
    sandbox: Sandbox
    session_id: str = ""

    def pipeline(self, store: Reach, client: HeldReply | None, config: PipelineConfig) -> Pipeline:
        upstream = self.core.client if client is None else cast(KontomatikClient, client)
        return Pipeline(cast(Store, store), upstream, config, self.clock)

    async def submit(self) -> str:
        minted = self.sandbox.mint_consent("owner-late")
        self.session_id = minted.session_id
        now = self.clock.now()
        outcome = await self.core.store.submit_consent(
            ConsentIn(
                owner_external_id="owner-late",
                session_id=minted.session_id,
                session_signature=minted.signature,
            ),
            now=now,
            since=now.date() - timedelta(days=90),
            expires_at=now + timedelta(days=180),
        )
        return outcome.import_id

    async def until_final(self, import_id: str) -> ImportRecord:
        while True:
            record = await sc.get_import(self.core.store, import_id)
            assert record is not None
            if record.state in (ImportState.SUCCESSFUL, ImportState.FAILED):
                return record
            await self.clock.sleep(1.0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = VirtualClock(START)
    sandbox = Sandbox(SandboxConfig(command_seconds=20.0), clock=clock.now)
    async with open_core(
        Settings(),
        clock=clock,
        sandbox=sandbox,
        db_path=tmp_path / "aisd.db",
        wrap_store=functools.partial(watched, clock=clock),
        scratch_db=True,
        pipeline_config=CLUSTER,
    ) as core:
        yield World(core, clock, sandbox)


async def test_a_command_id_stored_after_the_claim_lapsed_is_polled_by_the_adopter(
    world: World,
) -> None:
    import_id = await world.submit()
    outage = Outage()
    held = HeldReply(world.core.client)
    a = world.pipeline(Reach(world.core.store, outage), held, CLUSTER)
    b_store = Reach(world.core.store)
    b = world.pipeline(b_store, None, CLUSTER)
    async with anyio.create_task_group() as tg:
        await tg.start(world.clock.run)
        with anyio.fail_after(30):
            await tg.start(a.run)
            await held.sent.wait()
            # The database goes away with the reply in flight, for longer than the lease.
            outage.on = True
            await world.clock.sleep(LEASE + 1)
            await tg.start(b.run)
            await b_store.adopted.wait()
            # a gets its reply and cannot store it; the database comes back after a's first try.
            held.release.set()
            await outage.command_refused.wait()
            outage.on = False
            record = await world.until_final(import_id)
        tg.cancel_scope.cancel()
    assert record.state == ImportState.SUCCESSFUL, record.error
    assert record.command_id is not None
    assert outage.late_refused == []
    # One Default Import on the session: the adopter never sent the resolving one.
    assert world.sandbox.stats.imports_by_session == {world.session_id: 1}
    assert world.sandbox.stats.commands_created == 1


async def test_a_sender_cut_off_beyond_the_grace_finds_the_import_resolved(
    world: World,
) -> None:
    # Shorter than any real setting, so the resolution comes while the sender still retries.
    config = replace(CLUSTER, reply_grace_seconds=20.0)
    import_id = await world.submit()
    outage = Outage()
    held = HeldReply(world.core.client)
    a = world.pipeline(Reach(world.core.store, outage), held, config)
    b_store = Reach(world.core.store)
    b = world.pipeline(b_store, None, config)
    async with anyio.create_task_group() as tg:
        await tg.start(world.clock.run)
        with anyio.fail_after(30):
            await tg.start(a.run)
            await held.sent.wait()
            outage.on = True
            await world.clock.sleep(LEASE + 1)
            await tg.start(b.run)
            await b_store.adopted.wait()
            held.release.set()
            record = await world.until_final(import_id)
            outage.on = False
            while not outage.late_refused:
                await world.clock.sleep(1.0)
        tg.cancel_scope.cancel()
    # The order the grace is there to prevent: the resolving Default Import finds the first
    # one executed and the import is lost; the late command id is refused, never recorded.
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == LOST_IMPORT
    assert record.command_id is None
    assert len(outage.late_refused) == 1
    assert world.sandbox.stats.imports_by_session == {world.session_id: 2}
    assert world.sandbox.stats.commands_created == 1


async def test_a_sole_claimer_keeps_its_command_id_through_a_long_storage_outage(
    world: World,
) -> None:
    # One host on SQLite with a full disk: the lease never lapses, the command id is kept
    # and stored once the disk has room again, however long that takes.
    import_id = await world.submit()
    outage = Outage()
    held = HeldReply(world.core.client)
    a = world.pipeline(Reach(world.core.store, outage), held, replace(CLUSTER, sole_claimer=True))
    async with anyio.create_task_group() as tg:
        await tg.start(world.clock.run)
        with anyio.fail_after(30):
            await tg.start(a.run)
            await held.sent.wait()
            outage.on = True
            held.release.set()
            await outage.command_refused.wait()
            await world.clock.sleep(600.0)
            outage.on = False
            record = await world.until_final(import_id)
        tg.cancel_scope.cancel()
    assert record.state == ImportState.SUCCESSFUL, record.error
    assert world.sandbox.stats.imports_by_session == {world.session_id: 1}


async def test_a_lease_renewed_after_it_may_have_lapsed_drives_its_imports_again(
    world: World,
) -> None:
    # Renewals fail (a frozen heartbeat) past the daemon's own deadline but not past the
    # lease in the database: the import tasks stop sending, nobody adopts, and the renewed
    # lease must take the imports up again instead of leaving them claimed and undriven.
    import_id = await world.submit()
    outage = Outage(only=frozenset({"lease"}))
    a = world.pipeline(Reach(world.core.store, outage), None, CLUSTER)
    async with anyio.create_task_group() as tg:
        await tg.start(world.clock.run)
        with anyio.fail_after(30):
            await tg.start(a.run)
            while (seen := await sc.get_import(world.core.store, import_id)) is None or (
                seen.command_id is None
            ):
                await world.clock.sleep(0.5)
            outage.on = True
            await world.clock.sleep(LEASE * 1.5)
            outage.on = False
            record = await world.until_final(import_id)
        tg.cancel_scope.cancel()
    assert record.state == ImportState.SUCCESSFUL, record.error
    assert world.sandbox.stats.imports_by_session == {world.session_id: 1}
