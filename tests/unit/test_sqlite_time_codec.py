"""The SQLite store's stored form of a time: fixed width, UTC, read back as written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.store.sqlite._codec import dt_in, dt_out

_ZONES = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_TIMES = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES
)


@given(_TIMES)
def test_a_time_is_stored_as_strftime_wrote_it_and_read_back_equal(value: datetime) -> None:
    stored = dt_in(value)
    assert stored == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert len(stored) == len("2026-12-01T15:02:25.951174Z")
    assert dt_out(stored) == value


def test_whole_seconds_keep_their_microseconds_field() -> None:
    assert dt_in(datetime(2026, 12, 1, 15, 2, 25, tzinfo=UTC)) == "2026-12-01T15:02:25.000000Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        dt_in(datetime(2026, 12, 1, 15, 2, 25))
