"""The daemon's local JSON-RPC 2.0 socket: server, params, peers and listener."""

from __future__ import annotations

from aisd.rpc._errors import (
    BUSY,
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    PEER_NOT_ALLOWED,
    RpcError,
)
from aisd.rpc._listen import ListenError, open_listener
from aisd.rpc._params import Params
from aisd.rpc._peer import Peer, is_allowed, peer_credentials
from aisd.rpc._server import Handler, RpcServer

__all__ = [
    "BUSY",
    "CONFLICT",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "PEER_NOT_ALLOWED",
    "Handler",
    "ListenError",
    "Params",
    "Peer",
    "RpcError",
    "RpcServer",
    "is_allowed",
    "open_listener",
    "peer_credentials",
]
