"""The systemd service protocol, without libsystemd: notify, socket activation, watchdog.

All three follow sd_notify(3), sd_listen_fds(3) and sd_watchdog_enabled(3); the protocol is
declared stable for independent reimplementation.
"""

from __future__ import annotations

import fcntl
import os
import socket

import structlog

_log = structlog.get_logger("aisd.systemd")

# sd_listen_fds(3): passed descriptors start here.
LISTEN_FDS_START = 3


def notify(message: str) -> bool:
    """Send a state change (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``) to systemd.

    Args:
        message: Newline-separated ``KEY=VALUE`` assignments.

    Returns:
        True when the message was sent; False when ``$NOTIFY_SOCKET`` is unset (not run
        by systemd) or the send failed, which is logged.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # A leading "@" names the abstract namespace, spelled with a NUL byte.
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        _log.warning("systemd.notify_failed", reason="unsupported NOTIFY_SOCKET address")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        _log.warning("systemd.notify_failed", errno=exc.errno)
        return False
    return True


def listen_fds() -> list[socket.socket]:
    """Take the sockets systemd passed to this process (socket activation).

    The ``LISTEN_*`` variables are removed so child processes do not take them too, and
    the descriptors are marked close-on-exec.

    Returns:
        The passed sockets in order (fd 3 first); empty when none were passed to us.

    Raises:
        ValueError: When ``$LISTEN_FDS`` is not a non-negative integer.
        OSError: When a passed descriptor is not a socket.
    """
    pid = os.environ.pop("LISTEN_PID", None)
    count = os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid.strip() != str(os.getpid()):
        return []
    if not count.strip().isdigit():
        raise ValueError("LISTEN_FDS must be a non-negative integer")
    sockets: list[socket.socket] = []
    try:
        for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
            sockets.append(socket.socket(fileno=fd))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1``: half the interval systemd enforces.

    Returns:
        Seconds between keep-alives, or None when the watchdog is off or meant for
        another process (``$WATCHDOG_PID``).

    Raises:
        ValueError: When ``$WATCHDOG_USEC`` or ``$WATCHDOG_PID`` is not an integer.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        if not pid.strip().isdigit():
            raise ValueError("WATCHDOG_PID must be a process id")
        if int(pid) != os.getpid():
            return None
    if not usec.strip().isdigit():
        raise ValueError("WATCHDOG_USEC must be a non-negative integer")
    if int(usec) == 0:
        return None
    return int(usec) / 2 / 1_000_000
