"""The daemon's listening socket: the one systemd passed, or one aisd creates itself."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import Listener, SocketListener, SocketStream, TaskGroup

from aisd import systemd


class ListenError(Exception):
    """The socket cannot be listened on; the message says why (paths are not secret)."""


async def open_listener(socket_path: str, mode: int) -> tuple[Listener[SocketStream], bool]:
    """Open the daemon's Unix stream listener.

    Uses the socket systemd passed when ``$LISTEN_FDS``/``$LISTEN_PID`` name this process
    (never unlinked: it belongs to the .socket unit). Otherwise binds ``socket_path``
    itself, replacing a stale socket file but never a live socket or another kind of
    file, and removes the file again when the listener is closed.

    Args:
        socket_path: Where to create the socket when systemd passed none.
        mode: File mode of a socket created here, e.g. ``0o660``.

    Returns:
        The listener and whether it came from systemd.

    Raises:
        ListenError: When the passed socket is not one listening Unix stream socket, or
            the path is occupied by something that must not be removed.
    """
    try:
        passed = systemd.listen_fds()
    except (ValueError, OSError) as exc:
        raise ListenError(f"unusable socket from systemd: {exc}") from exc
    if passed:
        return await _from_systemd(passed), True
    return await _create(socket_path, mode), False


async def _from_systemd(passed: list[socket.socket]) -> SocketListener:
    sock = passed[0]
    try:
        if len(passed) != 1:
            raise ListenError(f"systemd passed {len(passed)} sockets; aisd takes exactly one")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ListenError("the socket from systemd is not a Unix stream socket (fd 3)")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ListenError("the socket from systemd is not listening (fd 3)")
        return await SocketListener.from_socket(sock)
    except BaseException:
        for unused in passed:
            unused.close()
        raise


def _clear_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            # Nobody accepts on it: a leftover of a process that did not clean up.
            pass
        except OSError as exc:
            raise ListenError(f"{path} is a socket that cannot be probed: {exc.strerror}") from exc
        else:
            raise ListenError(f"{path} is in use by another process")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _create(path: str, mode: int) -> Listener[SocketStream]:
    await anyio.to_thread.run_sync(_clear_stale, path)
    try:
        inner = await anyio.create_unix_listener(path, mode=mode)
    except OSError as exc:
        raise ListenError(f"cannot listen on {path}: {exc.strerror}") from exc
    info = os.stat(path)
    return _OwnedUnixListener(inner, path, (info.st_dev, info.st_ino))


class _OwnedUnixListener(Listener[SocketStream]):
    """A listener on a socket file aisd created, removed again on close."""

    def __init__(self, inner: SocketListener, path: str, identity: tuple[int, int]) -> None:
        self._inner = inner
        self._path = path
        self._identity = identity

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        return dict(self._inner.extra_attributes)

    async def serve(
        self, handler: Callable[[SocketStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        await self._inner.serve(handler, task_group)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._unlink()

    def _unlink(self) -> None:
        try:
            info = os.lstat(self._path)
        except FileNotFoundError:
            return
        # Another instance may have replaced the file since; its socket is not ours.
        if (info.st_dev, info.st_ino) == self._identity:
            os.unlink(self._path)
