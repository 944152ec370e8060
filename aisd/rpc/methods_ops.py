"""JSON-RPC methods of operations: webhook delivery status and redelivery."""

from __future__ import annotations

from aisd.rpc import NOT_FOUND, Handler, Params, Peer, RpcError
from aisd.webhooks import Webhooks

__all__ = ["webhook_methods"]

# Long enough for a URL; an endpoint is named by its URL or by the label status shows.
MAX_ENDPOINT_LEN = 2048


def webhook_methods(webhooks: Webhooks | None) -> dict[str, Handler]:
    """``webhooks.status`` and ``webhooks.redeliver``; with no endpoint configured, status lists
    none and a redelivery finds no endpoint."""

    async def webhooks_status(params: Params, peer: Peer) -> object:
        params.reject_unknown(set())
        return {"endpoints": [] if webhooks is None else await webhooks.status()}

    async def webhooks_redeliver(params: Params, peer: Peer) -> object:
        params.reject_unknown({"from", "endpoint"})
        from_id = params.int_("from", min=1)
        endpoint = params.str_("endpoint", required=False, max_len=MAX_ENDPOINT_LEN)
        if webhooks is None:
            raise RpcError(NOT_FOUND, "no webhook endpoint is configured (AISD_WEBHOOK_URL)")
        try:
            moved = await webhooks.redeliver(from_id, endpoint)
        except LookupError:
            raise RpcError(NOT_FOUND, "no such webhook endpoint") from None
        return {"endpoints": moved}

    return {"webhooks.status": webhooks_status, "webhooks.redeliver": webhooks_redeliver}
