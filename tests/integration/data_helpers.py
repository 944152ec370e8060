"""Builders shared by the data-out tests (feed, erasure, billing, retention): real imports
driven through the store's own pipeline methods, and the data-out RPC handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from aisd.clock import Clock
from aisd.kontomatik._models import Account, ImportResult, MoneyTransaction, Owner
from aisd.refresh import Refresher, RevokeFailed
from aisd.rpc import Handler, Params, Peer
from aisd.rpc.methods_data import data_methods
from aisd.store import ConsentIn, SqliteStore, TokenState
from tests import store_calls as sc
from tests.integration.steps_helpers import succeed

PEER = Peer(pid=1, uid=0, gid=0, groups=frozenset())


def tx(
    day: date, amount: str, title: str, *, status: str = "DONE", party: str | None = None
) -> MoneyTransaction:
    """One bank transaction."""
    return MoneyTransaction(
        transaction_on=day,
        booked_on=day if status == "DONE" else None,
        amount=Decimal(amount),
        balance=None,
        title=title,
        party=party,
        status=status,
    )


def result(
    accounts: dict[str, tuple[MoneyTransaction, ...]], persons: tuple[str, ...] = ()
) -> ImportResult:
    """An import result with the given accounts (IBAN -> transactions) and account holders."""
    return ImportResult(
        owners=tuple(Owner(name=name, kind="OWNER") for name in persons),
        accounts=tuple(
            Account(
                iban=iban,
                name="Konto",
                currency_name="PLN",
                balance=Decimal("100.00"),
                funds_available=Decimal("100.00"),
                transactions=txs,
            )
            for iban, txs in accounts.items()
        ),
    )


async def consent_import(
    store: SqliteStore,
    owner: str,
    n: int,
    res: ImportResult,
    *,
    now: datetime,
    took: timedelta = timedelta(minutes=5),
    raw: bytes | None = None,
    token: bool = True,
) -> tuple[str, str | None]:
    """A consent whose first import succeeds ``took`` later; returns (import id, token id)."""
    out = await store.submit_consent(
        ConsentIn(
            owner_external_id=owner,
            session_id=f"session-{owner}-{n}",
            session_signature=f"sig-SECRET-{owner}-{n}",
            multiple_access_id=f"maid-SECRET-{owner}-{n}" if token else None,
            target="KontoBank",
        ),
        now=now,
        since=now.date() - timedelta(days=365),
        expires_at=now + timedelta(days=180),
    )
    await finish(store, out.import_id, out.token_id, res, now=now + took, raw=raw)
    return out.import_id, out.token_id


async def refresh_import(
    store: SqliteStore, token_id: str, res: ImportResult, *, now: datetime
) -> str:
    """A refresh of the token that succeeds at ``now``; returns its import id."""
    import_id = await store.queue_refresh(token_id, now=now, since=now.date() - timedelta(days=90))
    assert isinstance(import_id, str)
    await finish(store, import_id, token_id, res, now=now)
    return import_id


async def finish(
    store: SqliteStore,
    import_id: str,
    token_id: str | None,
    res: ImportResult,
    *,
    now: datetime,
    raw: bytes | None = None,
) -> None:
    """Drive an import through Default Import to success at ``now``."""
    await succeed(store, import_id, res, now=now, raw=raw)


@dataclass
class FixedClock:
    """A clock standing still at ``at`` (tests move it by assignment)."""

    at: datetime = datetime(2026, 6, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class StubRefresher:
    """Revokes like :class:`Refresher` (end the token locally) without upstream, or fails."""

    store: SqliteStore
    clock: Clock
    fail: bool = False
    revoked: list[str] = field(default_factory=list)

    async def revoke(self, token_id: str, *, reason: str) -> TokenState:
        if self.fail:
            raise RevokeFailed("UpstreamDown")
        self.revoked.append(token_id)
        await sc.end_token(
            self.store, token_id, TokenState.REVOKED, now=self.clock.now(), reason=reason
        )
        return TokenState.REVOKED


def handlers(
    store: SqliteStore, clock: FixedClock, refresher: StubRefresher | None = None
) -> dict[str, Handler]:
    """The data-out handlers on a real store."""
    stub = refresher or StubRefresher(store, clock)
    return data_methods(store, cast(Refresher, stub), clock, refreshes_per_day=4)


async def call(table: dict[str, Handler], method: str, **params: Any) -> dict[str, Any]:
    """Call a handler as the server would and return its result object."""
    out = await table[method](Params(params), PEER)
    assert isinstance(out, dict)
    return out
