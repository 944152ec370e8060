"""The daemon's JSON-RPC methods: validation of params and shaping of results, nothing more.

Each handler reads its params through the fields of :mod:`aisd.rpc.catalog` (the server has
bound and validated them; errors name the field, never echo a value), calls the store or the
services, and returns the result shape docs/api.md gives. Times are ISO 8601 UTC strings and
amounts decimal strings.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aisd import __version__, usecases
from aisd.clock import Clock, iso
from aisd.kontomatik import ModelScore
from aisd.refresh import Refresher, RefreshRefused
from aisd.rpc import BUSY, CONFLICT, NOT_FOUND, Handler, Params, Peer, RpcError
from aisd.rpc import catalog as P
from aisd.rpc.catalog import STORAGE_UNAVAILABLE, UPSTREAM_ERROR
from aisd.sandbox import Sandbox
from aisd.store import (
    ConsentIn,
    EventRecord,
    ImportQuery,
    ImportRecord,
    ImportState,
    StorageUnavailable,
    Store,
    StoredTransaction,
    TokenRecord,
    TokenState,
)


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
    # A new consent stored a token: the planner plans it at once (the daemon pokes a tick).
    token_created: Callable[[], None] = lambda: None


def _jsonable(value: object) -> object:
    """Amounts as decimal strings and times as ISO 8601 UTC, as docs/api.md writes them."""
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
        consent = ConsentIn(
            owner_external_id=params[P.OWNER],
            session_id=params[P.SESSION_ID],
            session_signature=params[P.SIGNATURE],
            multiple_access_id=params[P.MULTIPLE_ACCESS_ID.optional()],
            target=params[P.TARGET.optional()],
            refresh_until=params[P.REFRESH_UNTIL.optional()],
            max_imports=params[P.MAX_IMPORTS.optional()],
        )
        try:
            outcome = await usecases.submit_consent(
                store,
                consent,
                now=services.clock.now(),
                history_days=services.history_days,
                access=timedelta(days=services.access_days),
            )
        except StorageUnavailable as exc:
            raise RpcError(
                STORAGE_UNAVAILABLE,
                "storage unavailable: the consent was not stored",
                {"reason": exc.reason},
            ) from None
        except usecases.ConsentConflict as exc:
            raise RpcError(
                CONFLICT,
                "a consent with this sessionId was submitted with another value",
                {"field": exc.field},
            ) from None
        if outcome.created:
            services.wake_pipeline()
            if outcome.token_id is not None:
                services.token_created()
        return {"importId": outcome.import_id, "tokenId": outcome.token_id}

    async def import_get(params: Params, peer: Peer) -> object:
        found = await store.imports(ImportQuery(import_id=params[P.IMPORT_ID]))
        if not found:
            raise RpcError(NOT_FOUND, "import not found")
        return import_json(found[0])

    async def import_list(params: Params, peer: Peer) -> object:
        state = params[P.IMPORT_STATE.optional()]
        query = ImportQuery(
            owner_external_id=params[P.OWNER.optional()],
            token_id=params[P.TOKEN_ID.optional()],
            state=ImportState(state) if state else None,
            limit=params[P.IMPORT_LIMIT],
        )
        records = await store.imports(query)
        return {"imports": [import_json(r) for r in records]}

    async def owner_data(params: Params, peer: Peer) -> object:
        owner = params[P.OWNER]
        view = await store.owner(owner)
        if view is None:
            raise RpcError(NOT_FOUND, "owner not found")
        accounts = [
            {
                **{key: _jsonable(value) for key, value in account.details.items()},
                "owners": list(account.owners),
                "transactions": [transaction_json(t) for t in account.transactions],
            }
            for account in view.accounts
        ]
        cards = [
            {
                **{k: _jsonable(value) for k, value in card.details.items()},
                "transactions": [transaction_json(t) for t in card.transactions],
            }
            for card in view.cards
        ]
        result: dict[str, object] = {
            "ownerExternalId": owner,
            "owners": list(view.owners),
            "accounts": accounts,
            "creditCards": cards,
        }
        if view.scores:
            result["analytics"] = {"scores": [score_json(s) for s in view.scores]}
        return result

    async def events_list(params: Params, peer: Peer) -> object:
        after = params[P.AFTER.or_default(0)]
        limit = params[P.EVENTS_LIMIT]
        events = (await store.events(after=after, limit=limit)).events
        return {
            "events": [event_json(e) for e in events],
            "next": events[-1].id if events else after,
        }

    async def daemon_status(params: Params, peer: Peer) -> object:
        status = await store.status(now=services.clock.now())
        counts = {"tokens": status.tokens, "imports": status.imports}
        last_import, failed = status.last_success_at, status.failed_last_hour
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
        state = params[P.TOKEN_STATE.optional()]
        tokens = await store.list_tokens(
            owner_external_id=params[P.OWNER.optional()],
            state=TokenState(state) if state else None,
        )
        explained = await refresher.explain(tokens)
        explain = params[P.EXPLAIN.optional()] is True
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
        token_id = params[P.TOKEN_ID.optional()]
        owner = params[P.OWNER.optional()]
        assert (token_id is None) != (owner is None), "Signature.exactly_one lets one through"
        try:
            revoked = await usecases.revoke_tokens(
                store, refresher, token_id=token_id, owner_external_id=owner
            )
        except LookupError:
            raise RpcError(NOT_FOUND, "token not found") from None
        except usecases.NotRevoked as exc:
            raise RpcError(
                UPSTREAM_ERROR, "upstream did not confirm the revocation", {"error": exc.error}
            ) from None
        return {"tokens": [{"tokenId": tid, "state": state.value} for tid, state in revoked]}

    async def token_refresh(params: Params, peer: Peer) -> object:
        token_id = params[P.TOKEN_ID]
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
    """The embedded sandbox's controls (``aisd run --sandbox`` only): ``sandbox.mint`` a demo
    consent, ``sandbox.status``, ``sandbox.advance`` its clock, ``sandbox.faults``,
    ``sandbox.kill`` an owner's tokens."""

    async def sandbox_mint(params: Params, peer: Peer) -> object:
        owner = params[P.DEMO_OWNER.optional()]
        minted = box.mint_consent(
            owner or f"demo-{secrets.token_hex(4)}",
            multiple_access=params[P.MULTIPLE_ACCESS.optional()] is not False,
            accounts=params[P.ACCOUNTS.optional()] or 2,
        )
        # A demo: the caller is the integrator's stand-in and needs the secrets to submit them.
        return {
            "ownerExternalId": minted.owner_external_id,
            "sessionId": minted.session_id,
            "sessionIdSignature": minted.signature,
            "multipleAccessId": minted.multiple_access_id,
            "target": "KontoBank",
        }

    async def sandbox_status(params: Params, peer: Peer) -> object:
        return box.summary()

    async def sandbox_advance(params: Params, peer: Peer) -> object:
        return {"now": iso(box.advance(timedelta(seconds=params[P.SECONDS])))}

    async def sandbox_faults(params: Params, peer: Peer) -> object:
        rates = {k.name: v for k in P.FAULTS if (v := params[k.optional()]) is not None}
        box.set_faults(rates)
        return {"faults": box.faults()}

    async def sandbox_kill(params: Params, peer: Peer) -> object:
        return {"killed": box.kill_tokens(params[P.KILL_OWNER])}

    return {
        "sandbox.mint": sandbox_mint,
        "sandbox.status": sandbox_status,
        "sandbox.advance": sandbox_advance,
        "sandbox.faults": sandbox_faults,
        "sandbox.kill": sandbox_kill,
    }


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
