"""The sandbox across restarts (its state file) and its test controls over HTTP."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aisd.rpc import Peer, RpcError
from aisd.rpc.catalog import CATALOG
from aisd.rpc.methods import sandbox_methods
from aisd.sandbox import DEFAULT_API_KEY, Sandbox, SandboxApp, SandboxConfig
from aisd.sandbox._config import ApiError

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PEER = Peer(pid=1, uid=0, gid=0, groups=frozenset())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_restarted_sandbox_knows_its_sessions_tokens_commands_and_quota(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "sandbox.json"
    first = Sandbox(SandboxConfig(command_seconds=5), clock=clock, state_path=path)
    alice = first.mint_consent("alice")
    command = first.default_import(alice.session_id, alice.signature, date(2026, 1, 1))
    assert alice.multiple_access_id is not None
    reused = first.reuse(alice.multiple_access_id)
    first.set_faults({"rate_5xx": 0.25})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert alice.signature in path.read_text()  # it is the provider's database: secrets kept

    running = Sandbox(SandboxConfig(command_seconds=5), clock=clock, state_path=path)
    assert running.config.rate_5xx == 0.25
    with pytest.raises(ApiError) as twice:
        running.default_import(alice.session_id, alice.signature, date(2026, 1, 1))
    assert twice.value.name == "DefaultImportAlreadyExecuted"
    running.advance(timedelta(hours=2))

    again = Sandbox(SandboxConfig(command_seconds=5), clock=clock, state_path=path)
    assert again.clock() == T0 + timedelta(hours=2)
    # The command finished in the meantime and is served, with its result, by the new run.
    done = again.get_command(command.id)
    assert done.result is not None
    assert {a.iban for a in done.result.accounts} == set(alice.ibans)
    # The token still works, and its earlier reuse still counts in the rolling window.
    for _ in range(3):
        again.reuse(alice.multiple_access_id)
    with pytest.raises(ApiError) as limited:
        again.reuse(alice.multiple_access_id)
    assert limited.value.name == "MultipleAccessLimitExceeded"
    # New ids never repeat the old ones.
    bob = again.mint_consent("bob")
    assert bob.session_id not in {alice.session_id, reused.session_id}
    assert bob.multiple_access_id != alice.multiple_access_id


def test_two_fresh_sandboxes_never_share_an_id() -> None:
    a, b = Sandbox(), Sandbox()
    one, two = a.mint_consent("same-owner"), b.mint_consent("same-owner")
    assert one.session_id != two.session_id
    assert one.multiple_access_id != two.multiple_access_id
    assert one.ibans == two.ibans  # the data stays seeded: same owner, same bank accounts


def test_a_state_file_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a sandbox state file"):
        Sandbox(state_path=path)


def test_controls_validate_their_values() -> None:
    box = Sandbox()
    with pytest.raises(ValueError, match="only moves forward"):
        box.advance(timedelta(0))
    with pytest.raises(ValueError, match="between 0 and 1"):
        box.set_faults({"rate_timeout": 1.5})
    with pytest.raises(ValueError, match="unknown fault knob"):
        box.set_faults({"api_key": 0.0})
    assert box.faults()["rate_timeout"] == 0.0


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, Sandbox]]:
    box = Sandbox(clock=Clock())
    transport = httpx.ASGITransport(app=SandboxApp(box))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox", headers={"X-Api-Key": DEFAULT_API_KEY}
    ) as client:
        yield client, box


async def test_http_controls(http: tuple[httpx.AsyncClient, Sandbox]) -> None:
    client, box = http
    minted = (await client.post("/sandbox/mint", data={"ownerExternalId": "carol"})).json()
    assert minted["ownerExternalId"] == "carol"
    assert minted["multipleAccessId"]
    moved = await client.post("/sandbox/advance", data={"seconds": "86400"})
    assert moved.json() == {"now": (T0 + timedelta(days=1)).isoformat()}
    faults = await client.post("/sandbox/faults", data={"rate_malformed": "0.5"})
    assert faults.json()["faults"]["rate_malformed"] == 0.5
    killed = await client.post("/sandbox/kill-tokens", data={"ownerExternalId": "carol"})
    assert killed.json() == {"killed": 1}
    with pytest.raises(ApiError) as dead:
        box.reuse(minted["multipleAccessId"])
    assert dead.value.name == "InvalidMultipleAccessId"
    status = (await client.get("/sandbox/status")).json()
    assert (status["sessions"], status["tokens"], status["deadTokens"]) == (1, 0, 1)
    refused = await client.post("/sandbox/faults", data={"rate_5xx": "lots"})
    assert (refused.status_code, refused.json()) == (400, {"error": "rate_5xx must be a number"})
    assert (await client.post("/sandbox/status")).status_code == 405
    assert (await client.get("/sandbox/nothing")).status_code == 404
    outsider = await client.get("/sandbox/status", headers={"X-Api-Key": "wrong"})
    assert outsider.status_code == 401
    assert json.dumps(status).count("carol") == 0  # a summary, not a dump of owners


async def test_the_embedded_sandbox_controls_through_the_method_table() -> None:
    box = Sandbox(clock=Clock())
    table = sandbox_methods(box)

    async def call(method: str, params: dict[str, object] | list[object]) -> object:
        bound = CATALOG[method].signature.bind(params)
        return await table[method](bound, PEER)

    minted = await call("sandbox.mint", {"ownerExternalId": "dave"})
    assert isinstance(minted, dict)
    assert await call("sandbox.advance", [3600]) == {"now": "2026-11-01T10:00:00Z"}
    faults = await call("sandbox.faults", {"rate_jobs_quota": 0.5, "latency_seconds": 2})
    assert isinstance(faults, dict)
    assert (faults["faults"]["rate_jobs_quota"], faults["faults"]["latency_seconds"]) == (0.5, 2.0)
    assert await call("sandbox.kill", ["dave"]) == {"killed": 1}
    assert await call("sandbox.kill", ["dave"]) == {"killed": 0}
    status = await call("sandbox.status", [])
    assert isinstance(status, dict)
    assert (status["tokens"], status["deadTokens"], status["offsetSeconds"]) == (0, 1, 3600.0)
    refusals: list[tuple[str, dict[str, object] | list[object], str]] = [
        ("sandbox.advance", [0], "seconds"),
        ("sandbox.faults", {"rate_5xx": 1.5}, "rate_5xx"),
        ("sandbox.faults", {"api_key": 0}, "api_key"),
        ("sandbox.kill", {}, "ownerExternalId"),
    ]
    for method, params, field in refusals:
        with pytest.raises(RpcError) as refused:
            await call(method, params)
        assert (refused.value.code, refused.value.data) == (-32602, {"field": field})
