"""The OpenRPC document: valid against the OpenRPC meta-schema, and true to the validation rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd import __version__
from aisd.rpc import Params, RpcError, RpcServer
from aisd.rpc._params import Field, Signature
from aisd.rpc.catalog import CATALOG, COMMON_ERRORS
from aisd.rpc.openrpc import DISCOVER, document
from tests.openrpc_schema import openrpc_validator


def _doc() -> dict[str, Any]:
    return document(CATALOG.values(), version=__version__, common_errors=COMMON_ERRORS)


def test_the_document_is_valid_openrpc() -> None:
    validator = openrpc_validator()
    errors = sorted(validator.iter_errors(_doc()), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_the_meta_schema_catches_a_broken_document() -> None:
    broken = _doc()
    broken["methods"][0]["paramStructure"] = "sideways"
    del broken["info"]
    assert len(list(openrpc_validator().iter_errors(broken))) >= 2


def test_every_method_is_described_with_its_params_in_order() -> None:
    doc = _doc()
    methods = {m["name"]: m for m in doc["methods"]}
    assert set(methods) == {*CATALOG, "rpc.discover"}
    assert [m["name"] for m in doc["methods"]] == sorted(methods)
    submit = methods["consent.submit"]
    assert [p["name"] for p in submit["params"]] == [
        "ownerExternalId",
        "sessionId",
        "sessionIdSignature",
        "multipleAccessId",
        "target",
        "refreshUntil",
        "maxImports",
    ]
    assert [p["required"] for p in submit["params"]] == [True] * 3 + [False] * 4
    assert submit["paramStructure"] == "by-name"
    assert {e["code"] for e in submit["errors"]} >= {-32009, -32602, -32603, -32030}
    assert methods["import.get"]["paramStructure"] == "either"
    events = methods["events.list"]["params"]
    assert [(p["name"], p["schema"].get("default")) for p in events] == [
        ("after", 0),
        ("limit", 100),
    ]
    assert events[1]["schema"]["maximum"] == 1000
    assert "Exactly one of" in methods["token.revoke"]["description"]
    for method in doc["methods"]:
        jsonschema.Draft7Validator.check_schema(method["result"]["schema"])
        for param in method["params"]:
            jsonschema.Draft7Validator.check_schema(param["schema"])


_FIELDS = sorted(
    {(f.name, id(f)): f for spec in CATALOG.values() for f in spec.signature.fields}.values(),
    key=lambda f: f.name,
)
# Floats are left out: JSON Schema counts 2.0 as an integer, aisd refuses it (stricter).
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=200_000),
    st.sampled_from(["2026-02-28", "2026-02-30", "2026-11", "2026-13", "0000-01", "active"]),
    st.text(max_size=20),
    st.text(min_size=250, max_size=300),
    st.lists(st.integers(), max_size=2),
)


@pytest.mark.parametrize("field", _FIELDS, ids=lambda f: f.name)
@given(value=_VALUES)
def test_a_param_schema_accepts_exactly_what_validation_accepts(
    field: Field[Any], value: object
) -> None:
    schema = field.json_schema()
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    by_schema = value is None or jsonschema.Draft7Validator(
        schema, format_checker=checker
    ).is_valid(value)
    try:
        field.optional().read(Params({field.name: value}))
    except RpcError:
        by_code = False
    else:
        by_code = True
    assert by_schema == by_code, (field.name, value)


def test_rpc_discover_describes_only_what_the_server_serves() -> None:
    async def handler(params: Params, peer: object) -> object:
        return None

    server = RpcServer(
        {"import.get": handler, "daemon.status": handler},
        allowed_uids=frozenset(),
        allowed_gids=frozenset(),
        catalog=CATALOG,
    )
    assert server.methods == {"import.get", "daemon.status", "rpc.discover"}
    # (An unspecified name: webhooks.status, the example here before, has a spec now.)
    with pytest.raises(ValueError, match=r"without a spec.*'webhooks\.unknown'"):
        RpcServer(
            {"webhooks.unknown": handler},
            allowed_uids=frozenset(),
            allowed_gids=frozenset(),
            catalog=CATALOG,
        )


def test_signatures_bind_by_name_and_by_position() -> None:
    get = CATALOG["import.get"].signature
    assert get.bind(["imp_1"])[_field(get, "importId")] == "imp_1"
    events = CATALOG["events.list"].signature
    bound = events.bind([5])
    assert (bound[_field(events, "after")], bound[_field(events, "limit")]) == (5, 100)
    too_many = _refusal(lambda: events.bind([1, 2, 3]))
    assert too_many.message == "invalid params: at most 2 params by position"
    by_name_only = _refusal(lambda: CATALOG["consent.submit"].signature.bind(["o", "s", "sig"]))
    assert by_name_only.message == (
        "invalid params: this method takes its params by name (an object)"
    )
    revoke = CATALOG["token.revoke"].signature
    for params in ({}, {"tokenId": "t", "ownerExternalId": "o"}):
        error = _refusal(lambda params=params: revoke.bind(params))
        assert error.data == {"field": "tokenId"}
        assert "exactly one of 'tokenId' or 'ownerExternalId'" in error.message
    assert _refusal(lambda: DISCOVER.signature.bind({"x": 1})).data == {"field": "x"}
    assert _refusal(lambda: Signature().bind([1])).code == -32602


def _field(signature: Signature, name: str) -> Field[Any]:
    return next(f for f in signature.fields if f.name == name)


def _refusal(call: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        call()
    assert info.value.code == -32602
    return info.value


API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_prose_reference_covers_every_method_param_and_error() -> None:
    text = API_MD.read_text()
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    for name, spec in {**CATALOG, "rpc.discover": DISCOVER}.items():
        assert any(name in heading for heading in headings), name
        for field in spec.signature.fields:
            assert f"`{field.name}`" in text, (name, field.name)
        # A by-position method says so in its heading or in its row of a table.
        if spec.signature.by_position and spec.signature.fields:
            in_heading = any(name in h and "by position" in h for h in headings)
            assert in_heading or f"`{name}` (by position)" in text, name
    for spec in CATALOG.values():
        for error in spec.errors:
            assert str(error.code) in text, (spec.name, error.code)
    for code in (-32700, -32600, -32601, -32602, -32603, -32001, -32004, -32009, -32010, -32029):
        assert f"| {code} |" in text, code
    for error in COMMON_ERRORS:
        assert f"| {error.code} |" in text
    assert "../shared" not in text
