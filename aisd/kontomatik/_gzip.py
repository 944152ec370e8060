"""Gzip of reply bodies, chunk by chunk, for keeping successful replies and replaying them."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# wbits 16 + 15 selects the gzip container, readable by ``gunzip`` as well as by zlib.
_GZIP_WBITS = 31
_CHUNK = 1 << 16


class GzipWriter:
    """Compresses a body fed chunk by chunk, so the uncompressed body is never held whole."""

    __slots__ = ("_compressor", "_parts")

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(wbits=_GZIP_WBITS)
        self._parts: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        """Compress the next chunk."""
        part = self._compressor.compress(chunk)
        if part:
            self._parts.append(part)

    def finish(self) -> bytes:
        """End the stream and return the whole gzip member."""
        self._parts.append(self._compressor.flush())
        return b"".join(self._parts)


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
