"""Which feed events are warnings, and redaction of whole secret values only."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from aisd.logs import MIN_SECRET_LENGTH, _scrub, event_level, register_secret, whole_replaced
from aisd.rpc.catalog import MIN_SECRET_LEN


def test_operator_events_are_warnings() -> None:
    assert event_level("import.failed", {"errorName": "SessionExpired"}) == logging.WARNING
    assert event_level("token.reauth_required", {}) == logging.WARNING
    assert event_level("quota.deferred", {"reason": "upstream_limit"}) == logging.WARNING
    assert event_level("quota.deferred", {"reason": "quota"}) == logging.INFO
    for routine in ("consent.received", "import.started", "import.succeeded", "token.expiring"):
        assert event_level(routine, {}) == logging.INFO


def test_only_whole_values_are_replaced() -> None:
    assert whole_replaced("Session expired.", "e", "***") == "Session expired."
    assert whole_replaced("sig abc123 and xabc123 and abc123y", "abc123", "#") == (
        "sig # and xabc123 and abc123y"
    )
    assert whole_replaced("abc123", "abc123", "#") == "#"
    assert whole_replaced("(abc123),abc123.", "abc123", "#") == "(#),#."
    assert whole_replaced("k=abc123&x", "abc123", "#") == "k=#&x"
    assert whole_replaced("aaaa", "aa", "#") == "aaaa"


@given(st.text(alphabet="ab .-", max_size=30), st.text(alphabet="ab", min_size=1, max_size=3))
def test_replacing_never_touches_a_secret_inside_a_word(text: str, secret: str) -> None:
    out = whole_replaced(text, secret, "\0")
    # Nothing but the secret was replaced, and only where it stood alone.
    assert out.replace("\0", secret) == text
    for index, char in enumerate(out):
        if char == "\0":
            neighbours = out[index - 1 : index] + out[index + 1 : index + 2]
            assert not any(c in "ab" for c in neighbours)


def test_short_secrets_are_neither_registered_nor_accepted_at_intake() -> None:
    assert MIN_SECRET_LEN == MIN_SECRET_LENGTH == 8
    register_secret("e")  # ignored: it would shred every word with an "e"
    assert _scrub("Session expired.") == "Session expired."
