"""When the store's checkpointer copies the WAL back: SQLite's own rule, and reading the log's
state from the WAL-index header."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from aisd.store.sqlite._checkpoint import AUTOCHECKPOINT_FRAMES, checkpoint_due, log_frames


def test_the_default_threshold_is_sqlites() -> None:
    assert not checkpoint_due(AUTOCHECKPOINT_FRAMES - 1, 0)
    assert checkpoint_due(AUTOCHECKPOINT_FRAMES, 0)
    assert not checkpoint_due(AUTOCHECKPOINT_FRAMES, AUTOCHECKPOINT_FRAMES)  # all copied


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**4))
def test_due_only_with_enough_frames_and_some_left_to_copy(
    frames: int, copied: int, threshold: int
) -> None:
    assert checkpoint_due(frames, copied, threshold) == (frames >= threshold and copied < frames)


def _header(frames: int, copied: int) -> bytes:
    header = bytearray(136)
    header[16:20] = frames.to_bytes(4, sys.byteorder)
    header[96:100] = copied.to_bytes(4, sys.byteorder)
    return bytes(header)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_frames_are_read_where_the_wal_index_keeps_them(frames: int, copied: int) -> None:
    assert log_frames(_header(frames, copied)) == (frames, copied)


def test_no_log_yet_reads_as_empty() -> None:
    assert log_frames(b"") == (0, 0)
    assert log_frames(b"\0" * 99) == (0, 0)
