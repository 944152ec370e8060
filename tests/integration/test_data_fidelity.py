"""Data fidelity in process: a bad element quarantined, an unknown command state bounded, and
the sandbox's shapes for cards and scores, through the real pipeline, client and store."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from aisd import pipeline as pipeline_module
from aisd.kontomatik import KontomatikClient, UnknownApiError
from aisd.sandbox import DEFAULT_API_KEY, SandboxApp
from aisd.settings import Settings
from aisd.store import ImportState
from aisd.store.postgresql import PostgresStore
from tests import store_calls as sc
from tests.integration._harness import Env, make_env, run_until_done
from tests.integration.backends import BACKENDS

pytestmark = pytest.mark.anyio

BAD_AMOUNT = b"12,34-not-a-number"


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """The integration harness on each backend: cards, owner echoes and refused replies are
    stored by each backend's own statements."""
    settings = Settings()
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        settings = Settings(database_url=SecretStr(url))
    async for value in make_env(tmp_path, settings=settings):
        assert isinstance(value.store, PostgresStore) == (request.param == "postgresql")
        yield value


class Rewriting(httpx.AsyncBaseTransport):
    """The sandbox over ASGI, with each Get Import Result body passed through ``rewrite``."""

    def __init__(self, app: SandboxApp, rewrite: Callable[[bytes], bytes]) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        if request.method == "GET" and request.url.path.startswith("/v1/command/"):
            body = self._rewrite(body)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body)


async def _client(env: Env, rewrite: Callable[[bytes], bytes]) -> AsyncIterator[Env]:
    transport = Rewriting(SandboxApp(env.sandbox), rewrite)
    async with KontomatikClient("http://sandbox.test", DEFAULT_API_KEY, transport=transport) as c:
        yield replace(env, client=c)


def _break_first_amount(body: bytes) -> bytes:
    if b'state="successful"' not in body:
        return body
    return re.sub(
        rb"<currencyAmount>[^<]*<", b"<currencyAmount>" + BAD_AMOUNT + b"<", body, count=1
    )


async def test_one_unreadable_transaction_is_quarantined_counted_and_logged_by_path(
    env: Env,
) -> None:
    async for broken in _client(env, _break_first_amount):
        import_id = await broken.submit("quinn", accounts=1)
        with capture_logs() as logs:
            await run_until_done(broken, broken.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.SUCCESSFUL
    [served] = env.sandbox.stats.served
    [account] = served.result.accounts
    stored = await sc.transactions(env.store, "quinn", account.iban)
    # The rest is imported: everything but the newest row, whose amount was unreadable.
    assert len(stored) == len(account.transactions) - 1
    [succeeded] = [
        e
        for e in await sc.list_events(env.store, after=0, limit=100)
        if e.type == "import.succeeded"
    ]
    assert succeeded.data["skipped"] == 1
    [skipped] = [line for line in logs if line["event"] == "import.element_skipped"]
    assert skipped["path"] == "accounts/account[1]/moneyTransactions/moneyTransaction[1]"
    assert "decimal" in skipped["reason"]
    assert not any(BAD_AMOUNT.decode() in repr(line) for line in logs)
    # The element is kept in the raw reply, for a replay by a better parser.
    [(_, _, raw)] = await sc.raw_replies(env.store, "quinn")
    assert BAD_AMOUNT in gzip.decompress(raw)


async def test_an_unknown_command_state_is_polled_for_a_bounded_time_then_named(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "POLL_DEADLINE_SECONDS", 0.5)

    def hatching(body: bytes) -> bytes:
        return re.sub(rb'state="[a-z_]+"', b'state="hatching"', body, count=1)

    async for odd in _client(env, hatching):
        import_id = await odd.submit("ursula", accounts=1)
        await run_until_done(odd, odd.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.state == ImportState.FAILED
    assert record.error is not None
    assert record.error.name == "UnknownCommandState"
    assert "hatching" in record.error.message
    # Polled on within the poll rules meanwhile, never started again.
    [command_id] = env.sandbox.stats.polls_by_command
    assert len(env.sandbox.stats.polls_by_command[command_id]) >= 2
    assert env.sandbox.stats.commands_created == 1


async def test_scores_of_an_owner_never_imported_have_no_data(env: Env) -> None:
    env.sandbox.config = replace(env.sandbox.config, score_unimported_owners=False)
    with pytest.raises(UnknownApiError) as info:
        await env.client.owner_scores("nobody")
    assert info.value.name == "NoDataToCalculateScore"
    import_id = await env.submit("somebody", accounts=1)
    await run_until_done(env, env.pipeline(), [import_id])
    assert [s.model_id for s in await env.client.owner_scores("somebody")] == ["common-2023-03-07"]


async def test_cards_are_merged_across_imports_by_card_id(env: Env) -> None:
    env.sandbox.config = replace(env.sandbox.config, cards_per_owner=1)
    first = await env.submit("cara", accounts=1)
    await run_until_done(env, env.pipeline(), [first])
    [card] = await sc.credit_cards(env.store, "cara")
    before = {t.id: t for t in await sc.card_transactions(env.store, "cara", str(card["key"]))}
    # The same card again (a new consent, overlapping history): nothing doubles.
    second = await env.submit("cara", accounts=1)
    await run_until_done(env, env.pipeline(), [second])
    [again] = await sc.credit_cards(env.store, "cara")
    after = {t.id: t for t in await sc.card_transactions(env.store, "cara", str(again["key"]))}
    assert again["cardId"] == card["cardId"]
    assert set(before) <= set(after)
    served = env.sandbox.stats.served[-1].result.credit_cards[0]
    assert len(after) == len(served.transactions)


async def test_a_result_echoed_for_another_owner_is_refused_and_kept_apart(env: Env) -> None:
    env.sandbox.config = replace(env.sandbox.config, owner_echo_by_owner={"ann": "bob"})
    import_id = await env.submit("ann", multiple=True, accounts=1)
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.error is not None
    assert record.error.name == "OwnerMismatch"
    assert await sc.accounts(env.store, "ann") == []
    assert await sc.owner_details(env.store, "ann") == []
    assert await sc.kontomatik_owner_id(env.store, import_id) == "bob"
    refused = await sc.refused_reply(env.store, import_id)
    assert refused is not None
    reason, reply = refused
    assert reason == "OwnerMismatch"
    assert b"<accounts>" in gzip.decompress(reply)
    # Kept for inspection, never for replay.
    assert await sc.replay_owners(env.store) == []


async def test_an_unexpected_reuse_reply_is_kept_and_the_token_paused(env: Env) -> None:
    first = await env.submit("gus", multiple=True, accounts=1)
    await run_until_done(env, env.pipeline(), [first])
    [token] = await env.store.list_tokens(owner_external_id="gus")
    env.sandbox.config = replace(env.sandbox.config, reuse_shape="garbage")
    refresh = await env.store.queue_refresh(
        token.token_id, now=env.clock.now(), since=token.created_at.date()
    )
    assert isinstance(refresh, str)
    await run_until_done(env, env.pipeline(), [refresh])
    record = await sc.get_import(env.store, refresh)
    assert record is not None
    assert record.error is not None
    assert record.error.name == "UnexpectedReply"
    refused = await sc.refused_reply(env.store, refresh)
    assert refused is not None
    assert b"<surprise>" in gzip.decompress(refused[1])
    [paused] = await env.store.list_tokens(owner_external_id="gus")
    assert (paused.next_refresh_at, paused.plan_reason) == (None, "refresh_paused")
    assert await sc.due_tokens(env.store, now=env.clock.now() + timedelta(days=30), limit=10) == []
