"""Gzip of reply bodies, chunk by chunk, for keeping successful replies and replaying them."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# wbits 16 + 15 selects the gzip container, readable by ``gunzip`` as well as by zlib.
_GZIP_WBITS = 31
_CHUNK = 1 << 16
HOLD_BYTES = 1 << 16


class GzipWriter:
    """Compresses a body fed chunk by chunk, so the uncompressed body is never held whole.

    The first :data:`HOLD_BYTES` are held uncompressed: most bodies fed are small replies of
    commands still running, which are never finished, and a compressor (its setup and a
    quarter megabyte of state) is made only for a body that is finished or grows past that.
    """

    __slots__ = ("_compressor", "_held", "_held_bytes", "_parts")

    def __init__(self) -> None:
        self._compressor: zlib._Compress | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._parts: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        """Compress the next chunk (held while the body is still small)."""
        if self._compressor is None:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
            if self._held_bytes < HOLD_BYTES:
                return
            chunk = self._release()
        part = self._compress(chunk)
        if part:
            self._parts.append(part)

    def finish(self) -> bytes:
        """End the stream and return the whole gzip member."""
        if self._compressor is None:
            self._parts.append(self._compress(self._release()))
        assert self._compressor is not None
        self._parts.append(self._compressor.flush())
        return b"".join(self._parts)

    def _release(self) -> bytes:
        self._compressor = zlib.compressobj(wbits=_GZIP_WBITS)
        held, self._held = b"".join(self._held), []
        return held

    def _compress(self, chunk: bytes) -> bytes:
        assert self._compressor is not None
        return self._compressor.compress(chunk)


def gunzip_reply(raw: bytes) -> Iterator[bytes]:
    """Decompress a kept reply in bounded chunks, for ``parse_command``.

    Raises:
        zlib.error: ``raw`` is not a complete gzip stream.
    """
    decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
    pending = raw
    while pending:
        chunk = decompressor.decompress(pending, _CHUNK)
        if chunk:
            yield chunk
        pending = decompressor.unconsumed_tail
    tail = decompressor.flush()
    if tail:
        yield tail
    if not decompressor.eof:
        raise zlib.error("gzip stream is truncated")
