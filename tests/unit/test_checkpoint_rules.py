"""When the store's checkpointer copies the WAL back: the pure rule it follows."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from aisd.store.sqlite._checkpoint import CheckpointPolicy, CheckpointState, Step, next_step

POLICY = CheckpointPolicy(min_interval=1.0, idle=5.0)
INF = float("inf")


def test_nothing_written_waits_for_the_next_write() -> None:
    assert next_step(CheckpointState(), POLICY, 100.0) == (Step.WAIT, INF)


def test_a_first_write_is_checkpointed_at_once() -> None:
    state = CheckpointState(pending=True, truncated=False, last_write=100.0)
    assert next_step(state, POLICY, 100.0) == (Step.PASSIVE, 0.0)


def test_checkpoints_are_at_least_min_interval_apart() -> None:
    state = CheckpointState(pending=True, truncated=False, last_write=100.2, last_checkpoint=99.9)
    step, wait = next_step(state, POLICY, 100.3)
    assert step == Step.WAIT
    assert abs(wait - 0.6) < 1e-9
    assert next_step(state, POLICY, 100.9)[0] == Step.PASSIVE


def test_the_log_is_truncated_once_writes_stop_for_the_idle_time() -> None:
    state = CheckpointState(pending=False, truncated=False, last_write=100.0, last_checkpoint=100.0)
    step, wait = next_step(state, POLICY, 102.0)
    assert step == Step.WAIT
    assert abs(wait - 3.0) < 1e-9
    assert next_step(state, POLICY, 105.0) == (Step.TRUNCATE, 0.0)
    assert next_step(replace(state, truncated=True), POLICY, 105.0) == (Step.WAIT, INF)


def test_a_truncation_a_reader_blocked_is_tried_an_idle_period_later() -> None:
    state = CheckpointState(
        pending=False, truncated=False, last_write=100.0, last_checkpoint=100.0, last_truncate=105.0
    )
    assert next_step(state, POLICY, 106.0)[0] == Step.WAIT
    assert next_step(state, POLICY, 110.0) == (Step.TRUNCATE, 0.0)


states = st.builds(
    CheckpointState,
    pending=st.booleans(),
    truncated=st.booleans(),
    last_write=st.floats(0, 1000),
    last_checkpoint=st.none() | st.floats(0, 1000),
    last_truncate=st.none() | st.floats(0, 1000),
)


@given(states, st.floats(0, 2000), st.floats(0.01, 10), st.floats(0.01, 60))
def test_the_rule_never_spins_and_never_leaves_pending_frames_waiting_forever(
    state: CheckpointState, now: float, interval: float, idle: float
) -> None:
    policy = CheckpointPolicy(min_interval=interval, idle=idle)
    step, wait = next_step(state, policy, now)
    if step == Step.WAIT:
        assert wait > 0
        assert wait <= (interval if state.pending else idle) or wait == INF
        assert wait < INF or (not state.pending and state.truncated)
    else:
        assert wait == 0.0
    if step == Step.PASSIVE:
        assert state.pending
    if step == Step.TRUNCATE:
        assert not state.pending
        assert not state.truncated
