"""The daemon's JSON-RPC methods: validation of params and shaping of results, nothing more.

Each handler validates its params (errors name the field, never echo a value), calls the store
or the services, and returns the CONTRACT's result shape. Times are ISO 8601 UTC strings and
amounts decimal strings.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aisd import __version__
from aisd.clock import Clock, iso
from aisd.kontomatik import ModelScore
from aisd.refresh import Refresher, RefreshRefused, RevokeFailed
from aisd.rpc import (
    BUSY,
    CONFLICT,
    INVALID_PARAMS,
    NOT_FOUND,
    Handler,
    Params,
    Peer,
    RpcError,
)
from aisd.sandbox import Sandbox
from aisd.store import (
    ConsentIn,
    EventRecord,
    ImportRecord,
    ImportState,
    StorageUnavailable,
    Store,
    StoredTransaction,
    TokenRecord,
    TokenState,
)

MAX_ID_LEN = 256
# Upstream failed to do what was asked (e.g. a revocation it never confirmed).
UPSTREAM_ERROR = -32010
# The database refused the write (disk full, read-only): nothing was stored, retry later.
STORAGE_UNAVAILABLE = -32030


@dataclass(slots=True)
class Services:
    """What the methods need from the running daemon."""

    store: Store
    clock: Clock
    history_days: int  # of a consent's first import (Settings.first_import_history_days)
    access_days: int
    wake_pipeline: Callable[[], None]
    status_extra: Callable[[], dict[str, Any]]
    started_at: str


def _jsonable(value: object) -> object:
    """Amounts as decimal strings and times as ISO 8601 UTC, as the CONTRACT writes them."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    return value


def score_json(score: ModelScore) -> dict[str, Any]:
    """One scoring model's verdict, as ``owner.data`` shows it under ``analytics``."""
    return {
        "modelId": score.model_id,
        "retrainedAt": iso(score.retrained_at) if score.retrained_at else None,
        "score": score.score,
        "percentile": score.percentile,
        "tier": score.tier,
    }


def import_json(record: ImportRecord) -> dict[str, Any]:
    """An import as ``import.get`` shows it."""
    return {
        "importId": record.import_id,
        "ownerExternalId": record.owner_external_id,
        "tokenId": record.token_id,
        "kind": record.kind.value,
        "state": record.state.value,
        "commandId": record.command_id,
        "createdAt": iso(record.created_at),
        "startedAt": iso(record.started_at) if record.started_at else None,
        "finishedAt": iso(record.finished_at) if record.finished_at else None,
        "polls": record.polls,
        "accounts": record.accounts,
        "transactions": record.transactions,
        "since": record.since.isoformat(),
        "error": (
            {"name": record.error.name, "message": record.error.message} if record.error else None
        ),
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    """An event of the feed."""
    return {
        "id": event.id,
        "at": iso(event.at),
        "type": event.type,
        "ownerExternalId": event.owner_external_id,
        "tokenId": event.token_id,
        "importId": event.import_id,
        "data": event.data,
    }


def transaction_json(tx: StoredTransaction) -> dict[str, Any]:
    """A merged transaction as ``owner.data`` shows it, with the stable ``transactionId`` that
    ``data.changes`` gives it too."""
    return {
        "transactionId": str(tx.id),
        "transactionOn": tx.transaction_on.isoformat(),
        "bookedOn": tx.booked_on.isoformat() if tx.booked_on else None,
        "currencyAmount": str(tx.amount),
        "currencyBalance": str(tx.balance) if tx.balance is not None else None,
        "title": tx.title,
        "party": tx.party,
        "partyIban": tx.party_iban,
        "kind": tx.kind,
        "status": tx.status,
        "labels": list(tx.labels),
    }


def core_methods(services: Services) -> dict[str, Handler]:
    """The methods of the daemon core: intake, imports, data, events, status."""
    store = services.store

    async def consent_submit(params: Params, peer: Peer) -> object:
        params.reject_unknown(
            {
                "ownerExternalId",
                "sessionId",
                "sessionIdSignature",
                "multipleAccessId",
                "target",
                "refreshUntil",
                "maxImports",
            }
        )
        consent = ConsentIn(
            owner_external_id=params.str_("ownerExternalId", max_len=MAX_ID_LEN),
            session_id=params.str_("sessionId", max_len=MAX_ID_LEN),
            session_signature=params.str_("sessionIdSignature", max_len=4096),
            multiple_access_id=params.str_("multipleAccessId", required=False, max_len=4096),
            target=params.str_("target", required=False, max_len=MAX_ID_LEN),
            refresh_until=params.date_("refreshUntil", required=False),
            max_imports=params.int_("maxImports", required=False, min=1, max=100_000),
        )
        now = services.clock.now()
        try:
            outcome = await store.submit_consent(
                consent,
                now=now,
                since=now.date() - timedelta(days=services.history_days),
                expires_at=now + timedelta(days=services.access_days),
            )
        except StorageUnavailable as exc:
            raise RpcError(
                STORAGE_UNAVAILABLE,
                "storage unavailable: the consent was not stored",
                {"reason": exc.reason},
            ) from None
        if outcome.created:
            services.wake_pipeline()
        return {"importId": outcome.import_id, "tokenId": outcome.token_id}

    async def import_get(params: Params, peer: Peer) -> object:
        params.reject_unknown({"importId"})
        record = await store.get_import(params.str_("importId", max_len=MAX_ID_LEN))
        if record is None:
            raise RpcError(NOT_FOUND, "import not found")
        return import_json(record)

    async def import_list(params: Params, peer: Peer) -> object:
        params.reject_unknown({"ownerExternalId", "tokenId", "state", "limit"})
        state = params.enum_("state", [s.value for s in ImportState], required=False)
        records = await store.list_imports(
            owner_external_id=params.str_("ownerExternalId", required=False, max_len=MAX_ID_LEN),
            token_id=params.str_("tokenId", required=False, max_len=MAX_ID_LEN),
            state=ImportState(state) if state else None,
            limit=params.int_("limit", required=False, min=1, max=1000) or 100,
        )
        return {"imports": [import_json(r) for r in records]}

    async def owner_data(params: Params, peer: Peer) -> object:
        params.reject_unknown({"ownerExternalId"})
        owner = params.str_("ownerExternalId", max_len=MAX_ID_LEN)
        if not await store.owner_exists(owner):
            raise RpcError(NOT_FOUND, "owner not found")
        accounts = []
        owners_of = await store.account_owners(owner)
        for account in await store.accounts(owner):
            iban = str(account["iban"])
            txs = await store.transactions(owner, iban)
            accounts.append(
                {
                    **{key: _jsonable(value) for key, value in account.items()},
                    "owners": owners_of.get(iban, []),
                    "transactions": [transaction_json(t) for t in txs],
                }
            )
        cards = []
        for card in await store.credit_cards(owner):
            key = str(card.pop("key"))
            txs = await store.card_transactions(owner, key)
            cards.append(
                {
                    **{k: _jsonable(value) for k, value in card.items()},
                    "transactions": [transaction_json(t) for t in txs],
                }
            )
        result: dict[str, object] = {
            "ownerExternalId": owner,
            "owners": await store.owner_details(owner),
            "accounts": accounts,
            "creditCards": cards,
        }
        scores = await store.owner_scores(owner)
        if scores:
            result["analytics"] = {"scores": [score_json(s) for s in scores]}
        return result

    async def events_list(params: Params, peer: Peer) -> object:
        params.reject_unknown({"after", "limit"})
        after = params.int_("after", required=False, min=0) or 0
        limit = params.int_("limit", required=False, min=1, max=1000) or 100
        events = await store.list_events(after=after, limit=limit)
        return {
            "events": [event_json(e) for e in events],
            "next": events[-1].id if events else after,
        }

    async def daemon_status(params: Params, peer: Peer) -> object:
        params.reject_unknown(set())
        counts = await store.counts()
        last_import, failed = await store.recent_activity(now=services.clock.now())
        return {
            "lastImportAt": iso(last_import) if last_import else None,
            "failedLastHour": failed,
            "version": __version__,
            "startedAt": services.started_at,
            "tokens": counts.get("tokens", {}),
            "imports": counts.get("imports", {}),
            "queued": counts.get("imports", {}).get("queued", 0),
            **services.status_extra(),
        }

    return {
        "consent.submit": consent_submit,
        "import.get": import_get,
        "import.list": import_list,
        "owner.data": owner_data,
        "events.list": events_list,
        "daemon.status": daemon_status,
    }


def token_json(token: TokenRecord) -> dict[str, Any]:
    """A token as ``token.list`` shows it (never its secret)."""
    return {
        "tokenId": token.token_id,
        "ownerExternalId": token.owner_external_id,
        "state": token.state.value,
        "createdAt": iso(token.created_at),
        "expiresAt": iso(token.expires_at),
        "lastImportAt": iso(token.last_import_at) if token.last_import_at else None,
        "nextRefreshAt": iso(token.next_refresh_at) if token.next_refresh_at else None,
        "deferredReason": token.plan_reason
        if token.plan_reason in ("quota", "upstream_limit", "backoff")
        else None,
        "stateReason": token.state_reason,
    }


def token_methods(store: Store, refresher: Refresher) -> dict[str, Handler]:
    """Multiple access: list, revoke and refresh tokens."""

    async def token_list(params: Params, peer: Peer) -> object:
        params.reject_unknown({"ownerExternalId", "state", "explain"})
        state = params.enum_("state", [s.value for s in TokenState], required=False)
        tokens = await store.list_tokens(
            owner_external_id=params.str_("ownerExternalId", required=False, max_len=MAX_ID_LEN),
            state=TokenState(state) if state else None,
        )
        explained = await refresher.explain(tokens)
        explain = params.bool_("explain", required=False) is True
        out = []
        for token in tokens:
            row = token_json(token)
            facts = explained[token.token_id]
            row["refreshesLast24h"] = facts["refreshesLast24h"]
            if explain:
                row.update(facts)
            out.append(row)
        return {"tokens": out}

    async def token_revoke(params: Params, peer: Peer) -> object:
        params.reject_unknown({"tokenId", "ownerExternalId"})
        token_id = params.str_("tokenId", required=False, max_len=MAX_ID_LEN)
        owner = params.str_("ownerExternalId", required=False, max_len=MAX_ID_LEN)
        if (token_id is None) == (owner is None):
            raise RpcError(
                INVALID_PARAMS,
                "invalid params: exactly one of 'tokenId' or 'ownerExternalId' is required",
                {"field": "tokenId"},
            )
        if token_id is not None:
            targets = [token_id]
        else:
            targets = [t.token_id for t in await store.list_tokens(owner_external_id=owner)]
        if not targets or not await store.list_tokens(token_ids=targets):
            raise RpcError(NOT_FOUND, "token not found")
        results = []
        for tid in targets:
            try:
                state = await refresher.revoke(tid, reason="revoked on request")
            except LookupError:
                raise RpcError(NOT_FOUND, "token not found") from None
            except RevokeFailed as exc:
                raise RpcError(
                    UPSTREAM_ERROR, "upstream did not confirm the revocation", {"error": str(exc)}
                ) from None
            results.append({"tokenId": tid, "state": state.value})
        return {"tokens": results}

    async def token_refresh(params: Params, peer: Peer) -> object:
        params.reject_unknown({"tokenId"})
        token_id = params.str_("tokenId", max_len=MAX_ID_LEN)
        try:
            import_id = await refresher.refresh_now(token_id)
        except LookupError:
            raise RpcError(NOT_FOUND, "token not found") from None
        except RefreshRefused as exc:
            if exc.reason == "quota":
                raise RpcError(
                    BUSY,
                    "the rolling quota allows no refresh now",
                    {"nextPossibleAt": iso(exc.next_possible_at) if exc.next_possible_at else None},
                ) from None
            raise RpcError(CONFLICT, exc.reason) from None
        return {"importId": import_id}

    return {"token.list": token_list, "token.revoke": token_revoke, "token.refresh": token_refresh}


def sandbox_methods(box: Sandbox) -> dict[str, Handler]:
    """``sandbox.mint``: a demo consent from the embedded sandbox (``aisd run --sandbox`` only)."""

    async def sandbox_mint(params: Params, peer: Peer) -> object:
        params.reject_unknown({"ownerExternalId", "multipleAccess", "accounts"})
        owner = params.str_("ownerExternalId", required=False, max_len=MAX_ID_LEN)
        minted = box.mint_consent(
            owner or f"demo-{secrets.token_hex(4)}",
            multiple_access=params.bool_("multipleAccess", required=False) is not False,
            accounts=params.int_("accounts", required=False, min=1, max=5) or 2,
        )
        # A demo: the caller is the integrator's stand-in and needs the secrets to submit them.
        return {
            "ownerExternalId": minted.owner_external_id,
            "sessionId": minted.session_id,
            "sessionIdSignature": minted.signature,
            "multipleAccessId": minted.multiple_access_id,
            "target": "KontoBank",
        }

    return {"sandbox.mint": sandbox_mint}


def merged(*tables: Mapping[str, Handler]) -> dict[str, Handler]:
    """One method table from several; a name defined twice is a programming error. Every
    method answers a storage failure with -32030, so callers know to retry."""
    out: dict[str, Handler] = {}
    for table in tables:
        for name, handler in table.items():
            assert name not in out, f"method {name} defined twice"
            out[name] = _storage_errors_answered(handler)
    return out


def _storage_errors_answered(handler: Handler) -> Handler:
    async def call(params: Params, peer: Peer) -> object:
        try:
            return await handler(params, peer)
        except StorageUnavailable as exc:
            raise RpcError(
                STORAGE_UNAVAILABLE,
                "storage unavailable: nothing was stored, try again later",
                {"reason": exc.reason},
            ) from None

    return call
