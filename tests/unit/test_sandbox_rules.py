"""The sandbox's rolling reuse quota against a reference model, on random reuse schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.sandbox import Sandbox, SandboxConfig
from aisd.sandbox._config import ApiError

START = datetime(2026, 1, 1, tzinfo=UTC)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=36 * 60), min_size=1, max_size=15))
def test_reuse_is_refused_exactly_when_five_sends_fall_in_24_hours(gaps: list[int]) -> None:
    now = START
    sandbox = Sandbox(SandboxConfig(), clock=lambda: now)
    token = sandbox.mint_consent("alice", accounts=1).multiple_access_id
    assert token is not None
    sent: list[datetime] = []
    for gap in gaps:
        now += timedelta(minutes=gap)
        sent.append(now)
        expected_ok = sum(1 for t in sent if t > now - timedelta(days=1)) <= 4
        if expected_ok:
            sandbox.reuse(token)
        else:
            with pytest.raises(ApiError, match="MultipleAccessLimitExceeded"):
                sandbox.reuse(token)
    assert sum(len(v) for v in sandbox.stats.reuses_by_account.values()) == len(gaps)
