"""The sandbox over real HTTP, through uvicorn: blocking for `aisd sandbox`, or as an anyio task."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import anyio
import uvicorn
from anyio.abc import TaskStatus

from aisd.sandbox._app import SandboxApp
from aisd.sandbox._config import DEFAULT_API_KEY, SandboxConfig
from aisd.sandbox._state import Sandbox

# Requests still in flight at shutdown (e.g. a timeout fault) are cut after this long.
_GRACEFUL_SHUTDOWN_SECONDS = 1


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class PortUnavailable(Exception):
    """The sandbox could not listen on the address asked for (in use, or not allowed)."""


def _uvicorn_config(
    sandbox: Sandbox,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: Literal["on", "off"],
    log_requests: bool = False,
) -> uvicorn.Config:
    return uvicorn.Config(
        SandboxApp(sandbox, log_requests=log_requests),
        host=host,
        port=port,
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def run_server(
    host: str,
    port: int,
    *,
    api_key: str,
    config: SandboxConfig | None = None,
    state_path: Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve a sandbox over HTTP until SIGINT/SIGTERM (blocking; `aisd sandbox`), logging
    one line per request.

    Args:
        host: address to bind.
        port: port to bind.
        api_key: the only X-Api-Key accepted (overrides ``config.api_key``).
        config: the sandbox's other knobs.
        state_path: keep the sandbox's state in this file across runs.
        announce: told, once listening, the base URL (and the key when it is the default).

    Raises:
        PortUnavailable: the address is in use or may not be bound.
        ValueError: ``state_path`` is not a sandbox state file.
    """
    sandbox = Sandbox(replace(config or SandboxConfig(), api_key=api_key), state_path=state_path)
    with _bound(host, port) as sock:
        bound = sock.getsockname()[1]
        where = f"[{host}]" if ":" in host else host
        key = (
            f"X-Api-Key: {api_key}" if api_key == DEFAULT_API_KEY else "X-Api-Key from AISD_API_KEY"
        )
        announce(f"sandbox listening on http://{where}:{bound}  ({key})")
        config_ = _uvicorn_config(sandbox, lifespan="on", log_requests=True)
        uvicorn.Server(config_).run(sockets=[sock])


async def serve(
    sandbox: Sandbox,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sandbox`` over HTTP until cancelled; ``task_status.started`` gets the bound port.

    Use as ``port = await task_group.start(serve, sandbox)``; port 0 picks a free port.
    """
    with _bound(host, port) as sock:
        sock.setblocking(False)
        bound: int = sock.getsockname()[1]
        server = _EmbeddedServer(_uvicorn_config(sandbox, lifespan="off"))

        async def run() -> None:
            # Shielded so that cancelling the caller stops uvicorn cleanly via should_exit.
            with anyio.CancelScope(shield=True):
                await server.serve(sockets=[sock])

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                # uvicorn offers only a flag, no event, to say it listens.
                while not server.started:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                task_status.started(bound)
                await anyio.sleep_forever()
            finally:
                server.should_exit = True
