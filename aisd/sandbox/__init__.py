"""A faithful local imitation of Kontomatik's API, for trials and tests.

``Sandbox`` holds the state and enforces the provider's rules; ``SandboxApp`` serves it as an
ASGI app (in-process through ``InProcessTransport``); ``serve`` and ``run_server`` put it on
real HTTP. The sandbox does not use aisd's own client, so it really tests it.
"""

from __future__ import annotations

from aisd.sandbox._app import CONTROL_PATHS, PATHS, SandboxApp, consent_json
from aisd.sandbox._config import DEFAULT_API_KEY, DEFAULT_TARGET, ERROR_STATUS, SandboxConfig
from aisd.sandbox._server import PortUnavailable, run_server, serve
from aisd.sandbox._state import FAULT_KNOBS, MintedConsent, Sandbox, SandboxStats, ServedImport
from aisd.sandbox._transport import InProcessTransport

__all__ = [
    "CONTROL_PATHS",
    "DEFAULT_API_KEY",
    "DEFAULT_TARGET",
    "ERROR_STATUS",
    "FAULT_KNOBS",
    "PATHS",
    "InProcessTransport",
    "MintedConsent",
    "PortUnavailable",
    "Sandbox",
    "SandboxApp",
    "SandboxConfig",
    "SandboxStats",
    "ServedImport",
    "consent_json",
    "run_server",
    "serve",
]
