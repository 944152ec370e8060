"""Who is on the other end of a Unix socket, and whether they may call."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

# The kernel reports unmapped ids (user namespaces) as the overflow id, so it names nobody.
OVERFLOW_ID = 65534
# CPython does not export SO_PEERGROUPS; 59 is its asm-generic value (x86, arm, riscv).
_SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)
_GID = struct.Struct("=I")
# NGROUPS_MAX on Linux; the buffer grows towards it when the kernel says ERANGE.
_MAX_GROUPS = 65536


@dataclass(frozen=True, slots=True)
class Peer:
    """The credentials the kernel recorded when the peer connected.

    Attributes:
        pid: The peer's process id (0 when not visible from our pid namespace).
        uid: The peer's effective user id.
        gid: The peer's effective group id.
        groups: The peer's supplementary groups (empty when the kernel cannot say).
    """

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


def parse_groups(raw: bytes) -> frozenset[int]:
    """Decode an ``SO_PEERGROUPS`` reply: an array of native-endian 4-byte gids.

    Args:
        raw: The bytes returned by ``getsockopt``.

    Returns:
        The group ids; a trailing partial entry is ignored.
    """
    usable = len(raw) - len(raw) % _GID.size
    return frozenset(gid for (gid,) in _GID.iter_unpack(raw[:usable]))


def _peer_groups(sock: socket.socket) -> frozenset[int]:
    size = 64 * _GID.size
    while True:
        try:
            return parse_groups(sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, size))
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < _MAX_GROUPS * _GID.size:
                size *= 16
                continue
            # Kernels before 4.13 lack the option: authorise on uid and primary gid only.
            return frozenset()


def peer_credentials(sock: socket.socket) -> Peer:
    """Read ``SO_PEERCRED`` and ``SO_PEERGROUPS`` from a connected Unix socket.

    Args:
        sock: The connected socket.

    Returns:
        The peer's credentials.

    Raises:
        OSError: When the socket cannot report credentials (not ``AF_UNIX``).
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid=pid, uid=uid, gid=gid, groups=_peer_groups(sock))


def is_allowed(peer: Peer, allowed_uids: frozenset[int], allowed_gids: frozenset[int]) -> bool:
    """Decide whether a peer may call.

    A listed uid is always allowed. Otherwise a listed primary or supplementary group
    allows it, except for credentials the kernel could not map (uid 65534) or whose
    process is invisible (pid 0): those are trusted only through an explicit uid.

    Args:
        peer: The peer's credentials.
        allowed_uids: Users that may call.
        allowed_gids: Groups whose members may call.

    Returns:
        Whether the peer is allowed.
    """
    if peer.uid in allowed_uids:
        return True
    if peer.uid == OVERFLOW_ID or peer.pid == 0:
        return False
    return peer.gid in allowed_gids or not peer.groups.isdisjoint(allowed_gids)
