"""The sandbox's rules, each proven through plain HTTP (httpx form POSTs, no aisd client)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from aisd.sandbox import (
    DEFAULT_API_KEY,
    MintedConsent,
    Sandbox,
    SandboxApp,
    SandboxConfig,
    serve,
)

START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Sandbox:
    return Sandbox(SandboxConfig(seed=7), clock=clock)


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=SandboxApp(sandbox))
    headers = {"X-Api-Key": DEFAULT_API_KEY}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox", headers=headers
    ) as client:
        yield client


def xml(reply: httpx.Response) -> ET.Element:
    return ET.fromstring(reply.content)


def paths(element: ET.Element, prefix: str = "") -> set[str]:
    """Every element path and attribute path under ``element`` (schema attributes aside)."""
    here = f"{prefix}/{element.tag}"
    found = {here} | {f"{here}@{a}" for a in element.attrib if not a.startswith(XSI)}
    for child in element:
        found |= paths(child, here)
    return found


def fixture_paths(fixtures_dir: Path, name: str) -> set[str]:
    return paths(ET.parse(fixtures_dir / name).getroot())


def exception_of(reply: httpx.Response) -> tuple[int, str, str]:
    root = xml(reply)
    exception = root.find("exception")
    assert exception is not None, reply.text
    assert root.get("status", "").startswith(str(reply.status_code))
    return reply.status_code, exception.get("name", ""), exception.findtext("message", "")


async def mock_session(
    http: httpx.AsyncClient, owner: str, *, multiple: bool = True, accounts: str | None = None
) -> tuple[str, str, str | None]:
    form = {"ownerExternalId": owner, "multipleAccess": "true" if multiple else "false"}
    if accounts is not None:
        form["accounts"] = accounts
    reply = await http.post("/v1/mock-session.xml", data=form)
    assert reply.status_code == 200, reply.text
    root = xml(reply)
    session = root.find("session")
    assert session is not None
    return session.get("id", ""), session.get("signature", ""), root.findtext("multipleAccessId")


async def start_import(
    http: httpx.AsyncClient, session_id: str, signature: str, since: str = "2025-11-28"
) -> httpx.Response:
    form = {"sessionId": session_id, "sessionIdSignature": signature, "since": since}
    return await http.post("/v1/command/default-import.xml", data=form)


async def command_id_of(reply: httpx.Response) -> str:
    assert reply.status_code == 202, reply.text
    command = xml(reply).find("command")
    assert command is not None
    return command.get("id", "")


async def reuse(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post(
        "/v1/command/reuse-multiple-access.xml", data={"multipleAccessId": token}
    )


async def finished_result(
    http: httpx.AsyncClient, clock: Clock, reply: httpx.Response
) -> ET.Element:
    command_id = await command_id_of(reply)
    clock.advance(seconds=8)
    polled = await http.get(f"/v1/command/{command_id}.xml")
    command = xml(polled).find("command")
    assert command is not None
    assert command.get("state") == "successful"
    result = command.find("result")
    assert result is not None
    return result


def transaction_days(result: ET.Element) -> list[date]:
    return [
        date.fromisoformat(t.findtext("transactionOn", "")) for t in result.iter("moneyTransaction")
    ]


# -- envelopes ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_wrong_api_key_gets_the_401_envelope(
    sandbox: Sandbox, fixtures_dir: Path, key: str | None
) -> None:
    headers = {} if key is None else {"X-Api-Key": key}
    transport = httpx.ASGITransport(app=SandboxApp(sandbox))
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        reply = await client.post(
            "/v1/mock-session.xml", data={"ownerExternalId": "o"}, headers=headers
        )
    assert reply.status_code == 401
    assert paths(xml(reply)) == fixture_paths(fixtures_dir, "unauthorized-reply.xml")
    assert xml(reply).get("status") == "401 Unauthorized"
    assert "wrong-key" not in reply.text
    assert sandbox.stats.commands_created == 0


@pytest.mark.anyio
async def test_mock_session_hands_a_token_only_with_multiple_access(
    http: httpx.AsyncClient,
) -> None:
    single = await mock_session(http, "alice", multiple=False)
    multiple = await mock_session(http, "alice", multiple=True)
    assert single[2] is None
    assert multiple[2]
    assert len({single[0], multiple[0]}) == 2
    assert all(len(s[1]) == 64 for s in (single, multiple))


@pytest.mark.anyio
async def test_default_import_answers_202_like_the_fixture(
    http: httpx.AsyncClient, fixtures_dir: Path
) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    reply = await start_import(http, session_id, signature)
    assert reply.status_code == 202
    assert paths(xml(reply)) == fixture_paths(fixtures_dir, "v1.default-import-reply.xml")
    command = xml(reply).find("command")
    assert command is not None
    assert (command.get("state"), command.get("name")) == ("setup", "DefaultImportCommand")
    assert xml(reply).get("ownerExternalId") == "alice"


@pytest.mark.anyio
async def test_command_passes_setup_and_in_progress_then_succeeds_like_the_fixture(
    http: httpx.AsyncClient, clock: Clock, fixtures_dir: Path
) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    command_id = await command_id_of(await start_import(http, session_id, signature))
    states = []
    for _ in range(5):
        polled = await http.get(f"/v1/command/{command_id}.xml")
        assert polled.status_code == 200
        command = xml(polled).find("command")
        assert command is not None
        states.append(command.get("state"))
        clock.advance(seconds=2)
    assert states == ["setup", "in_progress", "in_progress", "in_progress", "successful"]
    assert paths(xml(polled)) == fixture_paths(fixtures_dir, "v1.command-reply.default-import.xml")
    clock.advance(seconds=-2)
    assert (await http.get(f"/v1/command/{command_id}.xml")).content == polled.content


@pytest.mark.anyio
async def test_result_lists_newest_first_with_a_consistent_running_balance(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    session_id, signature, _ = await mock_session(http, "alice", accounts="2")
    result = await finished_result(http, clock, await start_import(http, session_id, signature))
    accounts = result.findall("accounts/account")
    assert [a.findtext("currencyName") for a in accounts] == ["PLN", "EUR"]
    for account in accounts:
        txs = account.findall("moneyTransactions/moneyTransaction")
        assert len(txs) > 200
        days = [t.findtext("transactionOn", "") for t in txs]
        assert days == sorted(days, reverse=True)
        assert min(days) >= "2025-11-28"
        balances = [Decimal(t.findtext("currencyBalance", "")) for t in txs]
        amounts = [Decimal(t.findtext("currencyAmount", "")) for t in txs]
        for i in range(len(txs) - 1):
            assert balances[i] - amounts[i] == balances[i + 1]
        assert Decimal(account.findtext("currencyBalance", "")) == balances[0]
    titles = {t.findtext("title") for t in result.iter("moneyTransaction")}
    assert "Zakupy w Żabce" in titles


# -- sessions -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_second_import_on_a_session_is_refused_and_the_session_ends_with_its_import(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    await command_id_of(await start_import(http, session_id, signature))
    second = await start_import(http, session_id, signature)
    assert exception_of(second) == (
        400,
        "DefaultImportAlreadyExecuted",
        "Default import was already run on this session.",
    )
    clock.advance(seconds=8)
    third = await start_import(http, session_id, signature)
    assert exception_of(third) == (404, "InvalidSessionId", "Session expired.")
    assert sandbox.stats.imports_by_session[session_id] == 3
    assert sandbox.stats.commands_created == 1


@pytest.mark.anyio
async def test_unknown_or_expired_session_gets_the_session_expired_envelope(
    http: httpx.AsyncClient, clock: Clock, fixtures_dir: Path
) -> None:
    unknown = await start_import(http, "123", "0" * 64)
    assert exception_of(unknown) == (404, "InvalidSessionId", "Session expired.")
    assert paths(xml(unknown)) == fixture_paths(fixtures_dir, "session-expired-reply.xml")
    session_id, signature, _ = await mock_session(http, "alice")
    clock.advance(minutes=30)
    expired = await start_import(http, session_id, signature)
    assert exception_of(expired) == (404, "InvalidSessionId", "Session expired.")


@pytest.mark.anyio
async def test_bad_signature_is_refused_without_echoing_it(http: httpx.AsyncClient) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    forged = "f" * 64 if signature != "f" * 64 else "e" * 64
    reply = await start_import(http, session_id, forged)
    status, name, _ = exception_of(reply)
    assert (status, name) == (400, "InvalidSessionIdSignature")
    assert forged not in reply.text
    assert signature not in reply.text
    # The session is still good for a correct import.
    assert (await start_import(http, session_id, signature)).status_code == 202


@pytest.mark.anyio
async def test_unknown_command_id(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/command/999.xml")
    assert exception_of(reply)[:2] == (404, "InvalidCommandId")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/v1/command/default-import.xml", {"sessionId": "1", "sessionIdSignature": "s"}),
        (
            "/v1/command/default-import.xml",
            {"sessionId": "1", "sessionIdSignature": "s", "since": "28.11.2025"},
        ),
        (
            "/v1/command/default-import.xml",
            {"sessionId": "1", "sessionIdSignature": "s", "since": "2025-02-30"},
        ),
        ("/v1/command/default-import.xml", {"sessionIdSignature": "s", "since": "2025-01-01"}),
        ("/v1/mock-session.xml", {"multipleAccess": "true"}),
        ("/v1/mock-session.xml", {"ownerExternalId": "o", "multipleAccess": "maybe"}),
        ("/v1/mock-session.xml", {"ownerExternalId": "o", "accounts": "PL00123"}),
        ("/v1/mock-session.xml", {"ownerExternalId": "o", "accounts": "0"}),
        ("/v1/command/reuse-multiple-access.xml", {}),
        ("/v1/command/delete-multiple-access.xml", {"multipleAccessId": " "}),
    ],
)
async def test_missing_or_invalid_fields_are_invalid_parameter(
    http: httpx.AsyncClient, path: str, form: dict[str, str]
) -> None:
    reply = await http.post(path, data=form)
    assert exception_of(reply)[:2] == (400, "InvalidParameter")


@pytest.mark.anyio
async def test_unknown_path_and_wrong_method(http: httpx.AsyncClient) -> None:
    assert exception_of(await http.get("/v1/nothing.xml"))[:2] == (404, "NotFound")
    assert exception_of(await http.get("/v1/command/default-import.xml"))[:2] == (
        405,
        "MethodNotAllowed",
    )


# -- the command pool ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_at_most_eight_commands_run_at_once(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    sessions = [await mock_session(http, f"owner-{i}") for i in range(10)]
    for session_id, signature, _ in sessions[:8]:
        assert (await start_import(http, session_id, signature)).status_code == 202
    ninth = await start_import(http, sessions[8][0], sessions[8][1])
    assert exception_of(ninth)[:2] == (429, "JobsQuotaExceeded")
    token = sessions[9][2]
    assert token is not None
    assert exception_of(await reuse(http, token))[:2] == (429, "JobsQuotaExceeded")
    assert sandbox.running_commands() == 8
    clock.advance(seconds=8)
    # The refused import left its session usable.
    assert (await start_import(http, sessions[8][0], sessions[8][1])).status_code == 202
    assert sandbox.stats.max_running == 8
    assert sandbox.stats.commands_created == 9


# -- multiple access ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_reuse_yields_a_fresh_session_for_one_import(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    session_id, _, token = await mock_session(http, "alice")
    assert token is not None
    reply = await reuse(http, token)
    assert reply.status_code == 200
    root = xml(reply)
    assert root.findtext("multipleAccessId") is None
    session = root.find("session")
    assert session is not None
    new_id, new_signature = session.get("id", ""), session.get("signature", "")
    assert new_id != session_id
    result = await finished_result(http, clock, await start_import(http, new_id, new_signature))
    assert result.findall("accounts/account")


@pytest.mark.anyio
async def test_four_reuses_per_account_per_rolling_day_shared_by_tokens(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    alice_id, alice_sig, alice = await mock_session(http, "alice", accounts="1")
    assert alice is not None
    # The consent's own import does not count.
    result = await finished_result(http, clock, await start_import(http, alice_id, alice_sig))
    iban = result.findtext("accounts/account/iban", "")
    assert sandbox.stats.reuses_by_account == {}
    _, _, bob = await mock_session(http, "bob", accounts=iban)
    assert bob is not None
    for token in (alice, bob, alice, bob):
        assert (await reuse(http, token)).status_code == 200
        clock.advance(minutes=10)
    fifth = await reuse(http, alice)
    assert exception_of(fifth)[:2] == (429, "MultipleAccessLimitExceeded")
    assert len(sandbox.stats.reuses_by_account[iban]) == 5
    # The refused fifth still counts: 24 h after the first reuse, the window holds four.
    clock.now = START + timedelta(seconds=8, days=1, minutes=1)
    assert exception_of(await reuse(http, bob))[:2] == (429, "MultipleAccessLimitExceeded")
    clock.now = START + timedelta(days=1, hours=1)
    assert (await reuse(http, bob)).status_code == 200


@pytest.mark.anyio
async def test_reuse_sessions_return_at_most_ninety_days(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    session_id, signature, token = await mock_session(http, "alice")
    assert token is not None
    first = await finished_result(http, clock, await start_import(http, session_id, signature))
    assert min(transaction_days(first)) < START.date() - timedelta(days=300)
    session = xml(await reuse(http, token)).find("session")
    assert session is not None
    later = await finished_result(
        http, clock, await start_import(http, session.get("id", ""), session.get("signature", ""))
    )
    assert min(transaction_days(later)) >= START.date() - timedelta(days=90)
    assert min(transaction_days(later)) <= START.date() - timedelta(days=85)


@pytest.mark.anyio
async def test_tokens_die_after_180_days_or_when_killed(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    _, _, old = await mock_session(http, "alice")
    _, _, killed = await mock_session(http, "bob")
    assert old is not None
    assert killed is not None
    sandbox.kill_token(killed)
    dead = await reuse(http, killed)
    assert exception_of(dead)[:2] == (404, "InvalidMultipleAccessId")
    assert killed not in dead.text
    clock.advance(days=180, seconds=-1)
    assert (await reuse(http, old)).status_code == 200
    clock.advance(seconds=1)
    assert exception_of(await reuse(http, old))[:2] == (404, "InvalidMultipleAccessId")


@pytest.mark.anyio
async def test_revoke_is_idempotent_and_ends_the_token(http: httpx.AsyncClient) -> None:
    _, _, token = await mock_session(http, "alice")
    assert token is not None
    for _ in range(2):
        reply = await http.post(
            "/v1/command/delete-multiple-access.xml", data={"multipleAccessId": token}
        )
        assert reply.status_code == 200
        assert xml(reply).get("status") == "200 OK"
        assert list(xml(reply)) == []
    assert exception_of(await reuse(http, token))[:2] == (404, "InvalidMultipleAccessId")


# -- data ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_same_seed_same_replies() -> None:
    bodies = []
    for seed in (7, 7, 8):
        clock = Clock(START)
        sandbox = Sandbox(SandboxConfig(seed=seed), clock=clock)
        transport = httpx.ASGITransport(app=SandboxApp(sandbox))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://s", headers={"X-Api-Key": DEFAULT_API_KEY}
        ) as client:
            session_id, signature, _ = await mock_session(client, "alice")
            result = await finished_result(
                client, clock, await start_import(client, session_id, signature)
            )
            bodies.append(ET.tostring(result))
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


@pytest.mark.anyio
async def test_later_imports_show_new_and_booked_transactions(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    session_id, signature, token = await mock_session(http, "alice")
    assert token is not None
    await finished_result(http, clock, await start_import(http, session_id, signature))
    clock.advance(days=5)
    session = xml(await reuse(http, token)).find("session")
    assert session is not None
    await finished_result(
        http, clock, await start_import(http, session.get("id", ""), session.get("signature", ""))
    )
    first, second = sandbox.stats.served
    assert second.as_of - first.as_of == timedelta(days=5, seconds=8)
    old = {
        (t.transaction_on, t.amount, t.title)
        for a in first.result.accounts
        for t in a.transactions
        if t.status == "DONE" and t.transaction_on >= second.since
    }
    new = {
        (t.transaction_on, t.amount, t.title)
        for a in second.result.accounts
        for t in a.transactions
    }
    assert old <= new
    assert max(d for d, _, _ in new) > max(d for d, _, _ in old)


@pytest.mark.anyio
async def test_owner_scores_like_the_fixture(http: httpx.AsyncClient, fixtures_dir: Path) -> None:
    reply = await http.get("/v1/owner-scores.xml", params={"ownerExternalId": "alice"})
    assert reply.status_code == 200
    assert paths(xml(reply)) == fixture_paths(fixtures_dir, "v1.owner-scores-reply.xml")
    assert xml(reply).findtext("models/model/scores/scoreTier/value") in set("ABCDE")


# -- knobs and faults ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_config_changes_at_runtime_and_per_owner_durations(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    sandbox.config = replace(
        sandbox.config, command_seconds=2, command_seconds_by_owner={"slow": 60}
    )
    fast_id, fast_sig, _ = await mock_session(http, "fast")
    slow_id, slow_sig, _ = await mock_session(http, "slow")
    fast = await command_id_of(await start_import(http, fast_id, fast_sig))
    slow = await command_id_of(await start_import(http, slow_id, slow_sig))
    clock.advance(seconds=2)
    states = []
    for command_id in (fast, slow):
        command = xml(await http.get(f"/v1/command/{command_id}.xml")).find("command")
        assert command is not None
        states.append(command.get("state"))
    assert states == ["successful", "setup"]


@pytest.mark.anyio
async def test_server_errors_are_not_processed(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    sandbox.config = replace(sandbox.config, rate_5xx=1.0)
    reply = await start_import(http, session_id, signature)
    assert reply.status_code == 503
    assert sandbox.stats.commands_created == 0


@pytest.mark.anyio
async def test_malformed_replies_are_processed_but_unparseable(
    http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    session_id, signature, _ = await mock_session(http, "alice")
    sandbox.config = replace(sandbox.config, rate_malformed=1.0)
    reply = await start_import(http, session_id, signature)
    assert reply.status_code == 202
    with pytest.raises(ET.ParseError):
        xml(reply)
    assert sandbox.stats.commands_created == 1


@pytest.mark.anyio
async def test_timeouts_hang_then_fail_after_processing(
    http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    _, _, token = await mock_session(http, "alice", accounts="1")
    assert token is not None
    sandbox.config = replace(sandbox.config, rate_timeout=1.0, timeout_fault_seconds=0.2)
    started = anyio.current_time()
    reply = await reuse(http, token)
    assert anyio.current_time() - started >= 0.2
    assert reply.status_code == 504
    assert sum(len(v) for v in sandbox.stats.reuses_by_account.values()) == 1


@pytest.mark.anyio
async def test_spurious_quota_errors_and_failed_imports(
    http: httpx.AsyncClient, sandbox: Sandbox, clock: Clock
) -> None:
    session_id, signature, token = await mock_session(http, "alice", accounts="1")
    assert token is not None
    sandbox.config = replace(sandbox.config, rate_access_limit=1.0)
    assert exception_of(await reuse(http, token))[:2] == (429, "MultipleAccessLimitExceeded")
    assert sum(len(v) for v in sandbox.stats.reuses_by_account.values()) == 1
    sandbox.config = replace(sandbox.config, rate_access_limit=0.0, rate_jobs_quota=1.0)
    refused = await start_import(http, session_id, signature)
    assert exception_of(refused)[:2] == (429, "JobsQuotaExceeded")
    sandbox.config = replace(sandbox.config, rate_jobs_quota=0.0, rate_import_error=1.0)
    command_id = await command_id_of(await start_import(http, session_id, signature))
    clock.advance(seconds=8)
    command = xml(await http.get(f"/v1/command/{command_id}.xml")).find("command")
    assert command is not None
    assert command.get("state") == "error"
    assert command.find("exception") is not None
    assert command.find("result") is None


@pytest.mark.anyio
async def test_latency_delays_replies(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.config = replace(sandbox.config, latency_seconds=0.1)
    started = anyio.current_time()
    await http.get("/v1/command/1.xml")
    assert anyio.current_time() - started >= 0.1


# -- helpers and real HTTP ----------------------------------------------------------------


def test_minted_consent_hides_its_secrets(sandbox: Sandbox) -> None:
    consent = sandbox.mint_consent("alice", accounts=["PL61109010140000071219812874"])
    assert isinstance(consent, MintedConsent)
    assert consent.multiple_access_id is not None
    assert consent.signature not in repr(consent)
    assert consent.multiple_access_id not in repr(consent)
    assert consent.ibans == ("PL61109010140000071219812874",)
    assert DEFAULT_API_KEY not in repr(sandbox.config)


@pytest.fixture
def loopback_sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(command_seconds=0), clock=Clock())


@pytest.mark.anyio
async def test_serves_real_http_on_a_free_loopback_port(loopback_sandbox: Sandbox) -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, loopback_sandbox, "127.0.0.1", 0)
        assert port > 0
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-Api-Key": DEFAULT_API_KEY}
        ) as client:
            session_id, signature, _ = await mock_session(client, "alice")
            command_id = await command_id_of(await start_import(client, session_id, signature))
            polled = await client.get(f"/v1/command/{command_id}.xml")
            command = xml(polled).find("command")
            assert command is not None
            assert command.get("state") == "successful"
            assert polled.headers["content-type"].startswith("application/xml")
        tg.cancel_scope.cancel()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/v1/command/1.xml")
