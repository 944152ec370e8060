"""The sandbox over real HTTP, through uvicorn: blocking for `aisd sandbox`, or as an anyio task."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal

import anyio
import uvicorn
from anyio.abc import TaskStatus

from aisd.sandbox._app import SandboxApp
from aisd.sandbox._config import SandboxConfig
from aisd.sandbox._state import Sandbox

# Requests still in flight at shutdown (e.g. a timeout fault) are cut after this long.
_GRACEFUL_SHUTDOWN_SECONDS = 1


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(
    sandbox: Sandbox, *, host: str = "127.0.0.1", port: int = 0, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    return uvicorn.Config(
        SandboxApp(sandbox),
        host=host,
        port=port,
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )


def run_server(host: str, port: int, *, api_key: str, config: SandboxConfig | None = None) -> None:
    """Serve a fresh sandbox over HTTP until SIGINT/SIGTERM (blocking; `aisd sandbox`).

    Args:
        host: address to bind.
        port: port to bind.
        api_key: the only X-Api-Key accepted (overrides ``config.api_key``).
        config: the sandbox's other knobs.
    """
    sandbox = Sandbox(replace(config or SandboxConfig(), api_key=api_key))
    uvicorn.Server(_uvicorn_config(sandbox, host=host, port=port, lifespan="on")).run()


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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
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
