"""The use cases behind the socket's methods, called as plain functions on a real store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from aisd import usecases
from aisd.refresh import RevokeFailed
from aisd.store import ConflictError, ConsentIn, TokenState
from tests import store_calls as sc
from tests.integration._harness import Env, run_until_done

pytestmark = pytest.mark.anyio


@dataclass
class Revoker:
    """Ends tokens locally as the refresher does after upstream confirms; fails on request."""

    env: Env
    failing: set[str] = field(default_factory=set)
    revoked: list[str] = field(default_factory=list)

    async def revoke(self, token_id: str, *, reason: str) -> TokenState:
        if token_id in self.failing:
            raise RevokeFailed("UpstreamDown")
        self.revoked.append(token_id)
        await sc.end_token(
            self.env.store, token_id, TokenState.REVOKED, now=self.env.clock.now(), reason=reason
        )
        return TokenState.REVOKED


async def consent(env: Env, owner: str) -> str:
    """A consent with multiple access whose first import has finished; its token id."""
    import_id = await env.submit(owner, multiple=True)
    await run_until_done(env, env.pipeline(), [import_id])
    record = await sc.get_import(env.store, import_id)
    assert record is not None
    assert record.token_id is not None
    return record.token_id


async def test_submit_sets_the_history_and_the_access_and_a_repeat_creates_nothing(
    env: Env,
) -> None:
    minted = env.sandbox.mint_consent("ann")
    given = ConsentIn(
        owner_external_id="ann",
        session_id=minted.session_id,
        session_signature=minted.signature,
        multiple_access_id=minted.multiple_access_id,
    )
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    first = await usecases.submit_consent(
        env.store, given, now=now, history_days=30, access=timedelta(days=7)
    )
    again = await usecases.submit_consent(
        env.store, given, now=now + timedelta(hours=1), history_days=30, access=timedelta(days=7)
    )
    assert first.created
    assert not again.created
    assert (again.import_id, again.token_id) == (first.import_id, first.token_id)
    record = await sc.get_import(env.store, first.import_id)
    assert record is not None
    assert record.since == now.date() - timedelta(days=30)
    [token] = await env.store.list_tokens(owner_external_id="ann")
    assert token.expires_at == now + timedelta(days=7)


async def test_revoking_an_owner_revokes_every_token_and_an_unknown_one_is_not_found(
    env: Env,
) -> None:
    tokens = [await consent(env, "bob"), await consent(env, "bob")]
    revoker = Revoker(env)
    out = await usecases.revoke_tokens(env.store, revoker, owner_external_id="bob")
    assert sorted(out) == sorted((t, TokenState.REVOKED) for t in tokens)
    with pytest.raises(LookupError):
        await usecases.revoke_tokens(env.store, revoker, token_id="tok_nope")
    with pytest.raises(LookupError):
        await usecases.revoke_tokens(env.store, revoker, owner_external_id="nobody")


async def test_a_failed_revocation_names_its_token_and_leaves_the_rest(env: Env) -> None:
    first, second = await consent(env, "cat"), await consent(env, "cat")
    revoker = Revoker(env, failing={first})
    with pytest.raises(usecases.NotRevoked) as caught:
        await usecases.revoke_tokens(env.store, revoker, owner_external_id="cat")
    assert caught.value.token_id == first
    assert caught.value.error == "UpstreamDown"
    states = {t.token_id: t.state for t in await env.store.list_tokens(owner_external_id="cat")}
    assert states[first] == TokenState.ACTIVE
    # Nothing after the failure was revoked either.
    assert revoker.revoked == ([] if states[second] == TokenState.ACTIVE else [second])


async def test_forget_erases_only_after_every_revocation(env: Env) -> None:
    token = await consent(env, "dan")
    failing = Revoker(env, failing={token})
    with pytest.raises(usecases.NotRevoked):
        await usecases.forget_owner(env.store, failing, "dan", now=env.clock.now())
    assert await sc.owner_exists(env.store, "dan")

    done = await usecases.forget_owner(env.store, Revoker(env), "dan", now=env.clock.now())
    assert done.tokens_revoked == 1
    assert done.rows_deleted > 0
    assert not await sc.owner_exists(env.store, "dan")
    with pytest.raises(LookupError):
        await usecases.forget_owner(env.store, Revoker(env), "dan", now=env.clock.now())


async def test_forget_refuses_while_an_import_is_queued(env: Env) -> None:
    await env.submit("eve", multiple=True)
    with pytest.raises(ConflictError):
        # The queued first import holds the erasure back; its token is revoked meanwhile.
        await usecases.forget_owner(env.store, Revoker(env), "eve", now=env.clock.now())
    assert await sc.owner_exists(env.store, "eve")


async def test_billing_counts_the_months_own_cycles(env: Env) -> None:
    await consent(env, "fay")
    now = env.clock.now()
    report = await usecases.billing_report(env.store, now.year, now.month, now=now)
    assert report.month == f"{now.year:04d}-{now.month:02d}"
    assert report.cycles == 0  # the token's cycle has not ended yet
    ahead = await usecases.billing_forecast(env.store, 2, now=now, refreshes_per_day=4)
    assert next(m.month for m in ahead) == report.month
    assert ahead[0].cycles + ahead[1].cycles >= 1


def test_month_bounds_roll_over_the_year() -> None:
    assert usecases.month_bounds(2026, 12) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert usecases.month_bounds(2027, 2) == (
        datetime(2027, 2, 1, tzinfo=UTC),
        datetime(2027, 3, 1, tzinfo=UTC),
    )


async def test_a_repeat_with_another_owner_is_a_conflict_naming_the_field(env: Env) -> None:
    minted = env.sandbox.mint_consent("gus")
    given = ConsentIn(
        owner_external_id="gus", session_id=minted.session_id, session_signature=minted.signature
    )
    now = env.clock.now()
    await usecases.submit_consent(env.store, given, now=now, history_days=30, access=timedelta(1))
    other = ConsentIn(
        owner_external_id="hal", session_id=minted.session_id, session_signature=minted.signature
    )
    with pytest.raises(usecases.ConsentConflict) as caught:
        await usecases.submit_consent(
            env.store, other, now=now, history_days=30, access=timedelta(1)
        )
    assert caught.value.field == "ownerExternalId"
    assert not await sc.owner_exists(env.store, "hal")
