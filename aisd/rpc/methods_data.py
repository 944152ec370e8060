"""JSON-RPC methods of data out: the change feed, erasure and billing.

``data.changes`` pages through the store's change sequence behind an opaque cursor;
``owner.forget``, ``billing.report`` and ``billing.forecast`` call their use cases in
:mod:`aisd.usecases` and shape the answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from aisd import usecases
from aisd.clock import Clock
from aisd.rpc import CONFLICT, INVALID_PARAMS, NOT_FOUND, Handler, Params, Peer, RpcError
from aisd.rpc import catalog as P
from aisd.rpc.catalog import (
    DEFAULT_CHANGES_LIMIT,
    MAX_CHANGES_LIMIT,
    MAX_FORECAST_MONTHS,
    UPSTREAM_ERROR,
)
from aisd.rpc.methods import transaction_json
from aisd.store import ConflictError, FeedTransaction, Store

__all__ = [
    "DEFAULT_CHANGES_LIMIT",
    "MAX_CHANGES_LIMIT",
    "MAX_FORECAST_MONTHS",
    "data_methods",
    "decode_cursor",
    "encode_cursor",
    "feed_transaction_json",
]

_CURSOR_PREFIX = "v1:"
_CURSOR_SEQ = re.compile(r"0|[1-9][0-9]{0,17}")


def encode_cursor(seq: int) -> str:
    """The opaque cursor of a change-sequence position."""
    raw = f"{_CURSOR_PREFIX}{seq}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The change-sequence position of a cursor made by :func:`encode_cursor`.

    Raises:
        ValueError: the cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("malformed cursor") from None
    seq = raw.removeprefix(_CURSOR_PREFIX)
    if seq == raw or not _CURSOR_SEQ.fullmatch(seq) or encode_cursor(int(seq)) != cursor:
        raise ValueError("malformed cursor")
    return int(seq)


def feed_transaction_json(item: FeedTransaction) -> dict[str, Any]:
    """A transaction of ``data.changes``: ``owner.data``'s fields plus its owner, where it
    belongs (``source``: ``account``, or ``card`` with the card's ``cardId`` and masked
    ``number``; ``iban`` is the account's, or the card's own when it has one) and currency."""
    tx = item.transaction
    where: dict[str, Any] = {"source": "account", "iban": tx.account_iban}
    if item.card is not None:
        where = {
            "source": "card",
            "iban": item.card.iban,
            "cardId": item.card.card_id,
            "number": item.card.number,
        }
    return {
        "transactionId": str(tx.id),
        "ownerExternalId": item.owner_external_id,
        **where,
        "currencyName": tx.currency_name,
        **transaction_json(tx),
    }


def _bad_cursor() -> RpcError:
    return RpcError(
        INVALID_PARAMS, "invalid params: 'cursor' is not a cursor of this feed", {"field": "cursor"}
    )


def data_methods(
    store: Store, refresher: usecases.Revoker, clock: Clock, *, refreshes_per_day: int
) -> dict[str, Handler]:
    """``data.changes``, ``owner.forget``, ``billing.report`` and ``billing.forecast``.

    Args:
        store: the daemon's store.
        refresher: revokes tokens upstream before an erasure.
        clock: the daemon's clock (billing counts only what has ended by now).
        refreshes_per_day: the refresh rate the forecast assumes for active tokens.

    Returns:
        The method table, to merge with the daemon's others.
    """

    async def data_changes(params: Params, peer: Peer) -> object:
        cursor = params[P.CURSOR.optional()]
        owner = params[P.OWNER.optional()]
        limit = params[P.CHANGES_LIMIT]
        after = 0
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except ValueError:
                raise _bad_cursor() from None
        try:
            page = await store.feed_changes(after=after, limit=limit, owner_external_id=owner)
        except LookupError:
            raise RpcError(NOT_FOUND, "owner not found") from None
        # A position past the newest change comes from another database: reading on would
        # silently skip that many future changes.
        if after > page.head:
            raise _bad_cursor()
        return {
            "added": [feed_transaction_json(t) for t in page.added],
            "modified": [feed_transaction_json(t) for t in page.modified],
            "removed": [{"transactionId": str(tx_id)} for tx_id in page.removed],
            "cursor": encode_cursor(page.last_seq),
            "hasMore": page.has_more,
        }

    async def owner_forget(params: Params, peer: Peer) -> object:
        owner = params[P.OWNER]
        try:
            forgotten = await usecases.forget_owner(store, refresher, owner, now=clock.now())
        except usecases.NotRevoked as exc:
            raise RpcError(
                UPSTREAM_ERROR,
                "upstream did not confirm the revocation; nothing was deleted",
                {"tokenId": exc.token_id, "error": exc.error},
            ) from None
        except LookupError:
            raise RpcError(NOT_FOUND, "owner not found") from None
        except ConflictError as exc:
            raise RpcError(CONFLICT, str(exc)) from None
        return {"tokensRevoked": forgotten.tokens_revoked, "rowsDeleted": forgotten.rows_deleted}

    async def billing_report(params: Params, peer: Peer) -> object:
        month = params[P.MONTH]
        report = await usecases.billing_report(store, month.year, month.month, now=clock.now())
        return {
            "month": report.month,
            "cycles": report.cycles,
            "imports": report.imports,
            "initialImports": report.initial_imports,
            "refreshImports": report.refresh_imports,
            "tokens": [
                {
                    "tokenId": line.token_id,
                    "ownerExternalId": line.owner_external_id,
                    "cycles": line.cycles,
                    "imports": line.imports,
                    "initialImports": line.initial_imports,
                    "refreshImports": line.refresh_imports,
                }
                for line in report.tokens
            ],
        }

    async def billing_forecast(params: Params, peer: Peer) -> object:
        months = params[P.MONTHS]
        ahead = await usecases.billing_forecast(
            store, months, now=clock.now(), refreshes_per_day=refreshes_per_day
        )
        return {
            "months": [{"month": m.month, "cycles": m.cycles, "imports": m.imports} for m in ahead]
        }

    return {
        "data.changes": data_changes,
        "owner.forget": owner_forget,
        "billing.report": billing_report,
        "billing.forecast": billing_forecast,
    }
