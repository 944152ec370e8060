"""The SQLite backend's stored time text: fixed width, UTC, so that text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.store.sqlite._codec import dt_in, dt_out

offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
)
instants = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@given(instants)
def test_stored_time_is_the_fixed_width_utc_text(value: datetime) -> None:
    text = dt_in(value)
    assert text == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert len(text) == 27
    assert dt_out(text) == value


@given(instants, instants)
def test_text_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (dt_in(a) < dt_in(b)) == (a < b)


def test_whole_seconds_keep_their_microseconds_field() -> None:
    assert dt_in(datetime(2026, 12, 1, 15, 2, 25, tzinfo=UTC)) == "2026-12-01T15:02:25.000000Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        dt_in(datetime(2026, 12, 1, 12, 0))
