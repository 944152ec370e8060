"""The end-to-poll delay estimate of /metrics (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aisd.metrics import end_poll_delay

seconds = st.floats(min_value=0, max_value=3600, allow_nan=False)


@given(seconds, st.one_of(st.none(), seconds), st.one_of(st.none(), seconds))
def test_the_estimate_lies_within_the_bracket_the_polls_give(
    finished: float, running: float | None, expected: float | None
) -> None:
    if running is not None and running > finished:
        running, finished = finished, running
    delay = end_poll_delay(finished, running, expected)
    lower = 0.0 if running is None else running
    assert 0.0 <= delay <= finished - lower + 1e-9


def test_known_cases() -> None:
    # Aimed just after the expected end: the delay is the margin.
    assert end_poll_delay(10.15, 8.0, 10.0) == 10.15 - 10.0
    # No estimate: the largest delay the polls allow.
    assert end_poll_delay(10.0, 7.0, None) == 3.0
    # An estimate before the last running poll is wrong: the end came after that poll.
    assert end_poll_delay(10.0, 7.0, 5.0) == 3.0
    # An estimate past the final poll: it ended at the latest at the poll.
    assert end_poll_delay(10.0, 7.0, 12.0) == 0.0
