"""Params: typed getters that name the field and never echo the value."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.rpc import INVALID_PARAMS, Params, RpcError

SECRET = "sig-9f8e7d6c5b4a"


def _error(call: object) -> RpcError:
    assert callable(call)
    with pytest.raises(RpcError) as info:
        call()
    return info.value


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except RpcError as error:
        return error


def test_from_json_accepts_objects_and_refuses_arrays() -> None:
    assert Params.from_json({"a": "x"}).str_("a") == "x"
    error = _error(lambda: Params.from_json(["x"]))
    assert error.code == INVALID_PARAMS
    assert error.message == "invalid params: params must be an object"


def test_str_reads_and_validates() -> None:
    params = Params({"id": "abc", "empty": "", "n": 5, "null": None})
    assert params.str_("id") == "abc"
    assert params.str_("missing", required=False) is None
    assert params.str_("null", required=False) is None
    missing = _error(lambda: params.str_("missing"))
    assert (missing.code, missing.message, missing.data) == (
        INVALID_PARAMS,
        "invalid params: 'missing' is required",
        {"field": "missing"},
    )
    assert _error(lambda: params.str_("n")).message == "invalid params: 'n' must be a string"
    assert "1 to 512" in _error(lambda: params.str_("empty")).message
    assert params.str_("empty", min_len=0) == ""
    assert _error(lambda: params.str_("id", max_len=2)).data == {"field": "id"}
    assert params.str_("id", pattern=r"[a-c]+") == "abc"
    assert "expected format" in _error(lambda: params.str_("id", pattern=r"[a-b]+")).message


def test_int_refuses_booleans_floats_and_out_of_range() -> None:
    params = Params({"n": 7, "b": True, "f": 1.0, "s": "7"})
    assert params.int_("n", min=7, max=7) == 7
    assert params.int_("none", required=False) is None
    for name in ("b", "f", "s"):
        assert _error(lambda name=name: params.int_(name)).message == (
            f"invalid params: {name!r} must be an integer"
        )
    assert _error(lambda: params.int_("n", min=8)).message.endswith("at least 8")
    assert _error(lambda: params.int_("n", max=6)).message.endswith("at most 6")


def test_date_and_month() -> None:
    params = Params({"d": "2026-02-28", "bad": "2026-02-30", "loose": "2026-2-3", "m": "2026-11"})
    assert params.date_("d") == dt.date(2026, 2, 28)
    assert params.date_("x", required=False) is None
    for name in ("bad", "loose", "m"):
        message = _error(lambda name=name: params.date_(name)).message
        assert message == f"invalid params: {name!r} must be a date (YYYY-MM-DD)"
    assert params.month_("m") == dt.date(2026, 11, 1)
    assert params.month_("x", required=False) is None
    for value in ("2026-13", "2026-00", "0000-01", "2026-1", "2026-11-01", "202611"):
        message = _error(lambda value=value: Params({"m": value}).month_("m")).message
        assert message == "invalid params: 'm' must be a month (YYYY-MM)"


def test_enum_and_bool() -> None:
    params = Params({"state": "active", "flag": False, "other": "nope", "one": 1})
    assert params.enum_("state", ["active", "revoked"]) == "active"
    assert params.enum_("x", ["a"], required=False) is None
    assert _error(lambda: params.enum_("other", {"b", "a"})).message == (
        "invalid params: 'other' must be one of 'a', 'b'"
    )
    assert params.bool_("flag") is False
    assert params.bool_("x", required=False) is None
    assert _error(lambda: params.bool_("one")).message == "invalid params: 'one' must be a boolean"


def test_reject_unknown_names_the_first_unknown_field() -> None:
    Params({"a": 1}).reject_unknown({"a", "b"})
    error = _error(lambda: Params({"a": 1, "zz": 2, "c": 3}).reject_unknown({"a"}))
    assert (error.message, error.data) == (
        "invalid params: 'c' is not a known field",
        {"field": "c"},
    )
    long_name = "k" * 500
    error = _error(lambda: Params({long_name: 1}).reject_unknown(set()))
    assert len(error.message) < 120
    assert error.data == {"field": "k" * 64}


def test_repr_lists_fields_but_not_values() -> None:
    text = repr(Params({"sessionIdSignature": SECRET}))
    assert "sessionIdSignature" in text
    assert SECRET not in text


def test_refusals_never_echo_the_value() -> None:
    params = Params({"f": SECRET})
    refusals = [
        lambda: params.str_("f", max_len=4),
        lambda: params.str_("f", pattern=r"[0-9]+"),
        lambda: params.int_("f"),
        lambda: params.date_("f"),
        lambda: params.month_("f"),
        lambda: params.enum_("f", ["x"]),
        lambda: params.bool_("f"),
    ]
    for refusal in refusals:
        error = _error(refusal)
        assert SECRET not in error.message
        assert SECRET not in repr(error)
        assert SECRET not in str(error.data)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=600),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@given(value=_VALUES)
def test_getters_either_return_a_typed_value_or_refuse_naming_the_field(value: object) -> None:
    params = Params({"f": value})
    getters = [
        lambda: params.str_("f", max_len=20),
        lambda: params.int_("f", min=0, max=10),
        lambda: params.date_("f"),
        lambda: params.month_("f"),
        lambda: params.enum_("f", ["x"]),
        lambda: params.bool_("f"),
    ]
    expected_types: list[type] = [str, int, dt.date, dt.date, str, bool]
    for getter, expected in zip(getters, expected_types, strict=True):
        outcome = _outcome(getter)
        if isinstance(outcome, RpcError):
            assert outcome.code == INVALID_PARAMS
            assert outcome.data == {"field": "f"}
            assert outcome.message.startswith("invalid params: 'f' ")
        else:
            assert isinstance(outcome, expected)
