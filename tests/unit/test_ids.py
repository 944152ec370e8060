"""The store's ids: the textual format, time order within a wrap, randomness after the prefix."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from aisd.store.sqlite._ids import new_id

WRAP = 1 << 24  # seconds: 6 hex digits


@given(st.sampled_from(["imp_", "tok_", "clm_"]), st.floats(0, 2**33, allow_nan=False))
def test_ids_keep_the_prefix_and_sixteen_hex_digits(prefix: str, at: float) -> None:
    assert re.fullmatch(rf"{prefix}[0-9a-f]{{16}}", new_id(prefix, at=at))


@given(st.integers(0, 2**33), st.integers(1, WRAP - 1))
def test_a_later_second_sorts_after_unless_the_prefix_wrapped(at: int, later: int) -> None:
    first, second = new_id("imp_", at=at), new_id("imp_", at=at + later)
    wrapped = at % WRAP + later >= WRAP
    assert (second > first) != wrapped


def test_ids_of_one_second_share_the_prefix_and_differ_after_it() -> None:
    ids = [new_id("imp_", at=1_800_000_000.5) for _ in range(1000)]
    assert len({i[:10] for i in ids}) == 1
    assert len(set(ids)) == 1000
