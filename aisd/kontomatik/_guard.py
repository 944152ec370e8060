"""Checks every reply byte passes before the XML parser sees it.

Kontomatik replies never declare a document type, so any ``<!DOCTYPE`` or ``<!ENTITY`` is hostile
(entity-expansion bombs, external entities) and is refused before expat could expand anything.
The scan is done on raw bytes, which is only sound for ASCII-compatible encodings: replies in
UTF-16/UTF-32 (the only others expat detects on its own) are refused outright.
"""

from __future__ import annotations

from aisd.kontomatik._errors import RetryLaterError, UnknownApiError

_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
# Enough of the previous chunk to catch a marker split across a chunk boundary.
_OVERLAP = max(len(m) for m in _MARKERS) - 1
# Byte-order marks and NUL-interleaved ``<`` that announce UTF-16 or UTF-32.
_WIDE_STARTS = (b"\xff\xfe", b"\xfe\xff", b"\x00<", b"<\x00", b"\x00\x00")


def malformed(message: str) -> RetryLaterError:
    """The error for a reply that is not the XML Kontomatik sends: retried, never fatal."""
    return RetryLaterError("MalformedReply", message)


class ByteGuard:
    """Counts a reply's bytes and refuses size overruns and document type declarations.

    Args:
        max_bytes: the largest reply accepted; beyond it ``ReplyTooLarge`` is raised.
    """

    __slots__ = ("_max_bytes", "_seen", "_tail")

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._seen = 0
        self._tail = b""

    def check(self, chunk: bytes) -> None:
        """Admit the next chunk, or raise.

        Raises:
            UnknownApiError: ``ReplyTooLarge``, the reply exceeds ``max_bytes`` (not retryable:
                the same reply would be refused again).
            RetryLaterError: ``MalformedReply``, a DTD or a non-UTF-8 encoding.
        """
        seam = self._tail + chunk[:_OVERLAP]
        # While fewer than two bytes were seen, the tail holds all of them.
        if self._seen < 2 and len(seam) >= 2 and seam[:2] in _WIDE_STARTS:
            raise malformed("reply is not UTF-8")
        self._seen += len(chunk)
        if self._seen > self._max_bytes:
            raise UnknownApiError(
                "ReplyTooLarge", f"reply exceeds the limit of {self._max_bytes} bytes"
            )
        for marker in _MARKERS:
            if marker in chunk or marker in seam:
                raise malformed("reply declares a document type or entities; refused")
        self._tail = (seam if len(chunk) < _OVERLAP else chunk)[-_OVERLAP:]
