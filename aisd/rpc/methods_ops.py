"""JSON-RPC methods of operations: webhook delivery status and redelivery."""

from __future__ import annotations

from aisd.rpc import NOT_FOUND, Handler, Params, Peer, RpcError
from aisd.rpc import catalog as P
from aisd.webhooks import Webhooks

__all__ = ["webhook_methods"]


def webhook_methods(webhooks: Webhooks | None) -> dict[str, Handler]:
    """``webhooks.status`` and ``webhooks.redeliver``; with no endpoint configured, status lists
    none and a redelivery finds no endpoint."""

    async def webhooks_status(params: Params, peer: Peer) -> object:
        return {"endpoints": [] if webhooks is None else await webhooks.status()}

    async def webhooks_redeliver(params: Params, peer: Peer) -> object:
        from_id = params[P.WEBHOOK_FROM]
        endpoint = params[P.WEBHOOK_ENDPOINT.optional()]
        if webhooks is None:
            raise RpcError(NOT_FOUND, "no such webhook endpoint (AISD_WEBHOOK_URL is not set)")
        try:
            moved = await webhooks.redeliver(from_id, endpoint)
        except LookupError:
            raise RpcError(NOT_FOUND, "no such webhook endpoint") from None
        return {"endpoints": moved}

    return {"webhooks.status": webhooks_status, "webhooks.redeliver": webhooks_redeliver}
