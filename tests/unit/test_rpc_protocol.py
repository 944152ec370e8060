"""The JSON-RPC wire format and the peer authorisation rule."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.rpc import INVALID_REQUEST, PARSE_ERROR, Peer, RpcError, is_allowed, peer_credentials
from aisd.rpc._peer import OVERFLOW_ID, parse_groups
from aisd.rpc._protocol import (
    Request,
    RequestError,
    decode_request,
    encode_error,
    encode_result,
    peek_id,
)


def _refusal(line: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode_request(line)
    return info.value


def test_decodes_a_request_and_a_notification() -> None:
    request = decode_request(b'{"jsonrpc":"2.0","id":7,"method":"a.b","params":{"x":1}}')
    assert isinstance(request, Request)
    assert (request.id, request.is_notification, request.method, request.params) == (
        7,
        False,
        "a.b",
        {"x": 1},
    )
    note = decode_request(b'{"jsonrpc":"2.0","method":"a.b"}')
    assert isinstance(note, Request)
    assert (note.id, note.is_notification, note.params) == (None, True, {})
    explicit_null = decode_request(b'{"jsonrpc":"2.0","id":null,"method":"m"}')
    assert isinstance(explicit_null, Request)
    assert (explicit_null.id, explicit_null.is_notification) == (None, False)


@pytest.mark.parametrize(
    "line",
    [b"\xff\xfe{}", b"{", b"not json", b'{"a": NaN}', b"[" * 100_000, "{}".encode("utf-16")],
)
def test_parse_errors(line: bytes) -> None:
    error = _refusal(line)
    assert (error.code, error.message, error.request_id) == (PARSE_ERROR, "parse error", None)


@pytest.mark.parametrize(
    ("line", "request_id", "message"),
    [
        (b"[]", None, "invalid request: empty batch"),
        (b"42", None, "invalid request: not an object"),
        (
            b'{"jsonrpc":"2.0","id":true,"method":"m"}',
            None,
            "invalid request: 'id' must be a string, a number or null",
        ),
        (
            b'{"jsonrpc":"2.0","id":{},"method":"m"}',
            None,
            "invalid request: 'id' must be a string, a number or null",
        ),
        (
            b'{"jsonrpc":"2.0","id":[1],"method":"m"}',
            None,
            "invalid request: 'id' must be a string, a number or null",
        ),
        (
            b'{"jsonrpc":"2.0","id":4,"method":"m","params":"x"}',
            4,
            "invalid request: 'params' must be an object or an array",
        ),
        (
            b'{"jsonrpc":"2.0","id":5,"method":"m","params":7}',
            5,
            "invalid request: 'params' must be an object or an array",
        ),
        (
            b'{"jsonrpc":"1.0","id":"a","method":"m"}',
            "a",
            "invalid request: 'jsonrpc' must be \"2.0\"",
        ),
        (b'{"id":3,"method":"m"}', 3, "invalid request: 'jsonrpc' must be \"2.0\""),
        (b'{"jsonrpc":"2.0","id":3,"method":5}', 3, "invalid request: 'method' must be a string"),
    ],
)
def test_invalid_requests(line: bytes, request_id: object, message: str) -> None:
    error = _refusal(line)
    assert (error.code, error.request_id, error.message) == (INVALID_REQUEST, request_id, message)
    assert peek_id(line) == request_id


def test_encoding_is_compact_utf8_and_newline_terminated() -> None:
    line = encode_result("r", {"title": "Zakupy żabka", "n": 1})
    assert line == '{"jsonrpc":"2.0","id":"r","result":{"title":"Zakupy żabka","n":1}}\n'.encode()
    error = encode_error(None, RpcError(-32004, "not found", {"field": "tokenId"}))
    assert json.loads(error) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32004, "message": "not found", "data": {"field": "tokenId"}},
    }
    assert "data" not in json.loads(encode_error(1, RpcError(-32603, "internal error")))["error"]
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_result(1, float("nan"))
    with pytest.raises(TypeError):
        encode_result(1, object())


@given(st.text(max_size=50))
def test_any_text_line_decodes_or_is_refused_with_a_standard_code(text: str) -> None:
    line = text.encode()
    try:
        outcome: object = decode_request(line)
    except RequestError as error:
        outcome = error
    if isinstance(outcome, RequestError):
        assert outcome.code in {PARSE_ERROR, INVALID_REQUEST}
    elif isinstance(outcome, list):
        decoded = json.loads(line)
        assert isinstance(decoded, list)
        assert len(outcome) == len(decoded) > 0
        for item in outcome:
            assert isinstance(item, Request) or item.code == INVALID_REQUEST
    else:
        assert isinstance(outcome, Request)
        assert json.loads(line)["jsonrpc"] == "2.0"


def test_a_batch_decodes_to_one_request_or_refusal_per_element() -> None:
    batch = decode_request(
        b'[{"jsonrpc":"2.0","id":1,"method":"m"},42,{"jsonrpc":"2.0","method":"n"},'
        b'{"jsonrpc":"2.0","id":"x","method":"o","params":"bad"}]'
    )
    assert isinstance(batch, list)
    first, second, third, fourth = batch
    assert isinstance(first, Request)
    assert (first.id, first.method) == (1, "m")
    assert isinstance(second, RequestError)
    assert second.message == "invalid request: not an object"
    assert isinstance(third, Request)
    assert third.is_notification
    assert isinstance(fourth, RequestError)
    assert fourth.request_id == "x"
    assert peek_id(b'[{"jsonrpc":"2.0","id":1,"method":"m"}]') is None


@pytest.mark.parametrize(
    ("raw_id", "echoed"),
    [
        (b'"abc"', b'"abc"'),
        (b"0", b"0"),
        (b"-7", b"-7"),
        (b"1.5", b"1.5"),
        (b"1.50", b"1.50"),
        (b"-0.25", b"-0.25"),
        (b"12345678901234567890", b"12345678901234567890"),
        (b"1e400", b"1E+400"),  # the same number; a float would have become Infinity
    ],
)
def test_ids_are_echoed_as_given(raw_id: bytes, echoed: bytes) -> None:
    request = decode_request(b'{"jsonrpc":"2.0","id":' + raw_id + b',"method":"m"}')
    assert isinstance(request, Request)
    assert b'"id":' + echoed + b',"result":null}' in encode_result(request.id, None)
    assert b'"id":' + echoed + b',"error":' in encode_error(request.id, RpcError(-32004, "x"))


_IDS = st.integers(min_value=0, max_value=70_000)


@given(
    uid=_IDS,
    gid=_IDS,
    groups=st.frozensets(_IDS, max_size=4),
    pid=st.integers(min_value=0, max_value=5),
    allowed_uids=st.frozensets(_IDS, max_size=3),
    allowed_gids=st.frozensets(_IDS, max_size=3),
)
def test_authorisation_rule(
    uid: int,
    gid: int,
    groups: frozenset[int],
    pid: int,
    allowed_uids: frozenset[int],
    allowed_gids: frozenset[int],
) -> None:
    peer = Peer(pid=pid, uid=uid, gid=gid, groups=groups)
    via_group = gid in allowed_gids or bool(groups & allowed_gids)
    trusted = uid != OVERFLOW_ID and pid != 0
    expected = uid in allowed_uids or (trusted and via_group)
    assert is_allowed(peer, allowed_uids, allowed_gids) is expected


def test_untrusted_credentials_need_an_explicit_uid() -> None:
    nobody = Peer(pid=10, uid=OVERFLOW_ID, gid=OVERFLOW_ID, groups=frozenset({5}))
    assert not is_allowed(nobody, frozenset(), frozenset({OVERFLOW_ID, 5}))
    assert is_allowed(nobody, frozenset({OVERFLOW_ID}), frozenset())
    hidden = Peer(pid=0, uid=1000, gid=1000, groups=frozenset())
    assert not is_allowed(hidden, frozenset(), frozenset({1000}))
    assert is_allowed(hidden, frozenset({1000}), frozenset())
    member = Peer(pid=10, uid=1000, gid=1000, groups=frozenset({27, 44}))
    assert is_allowed(member, frozenset(), frozenset({44}))
    assert not is_allowed(member, frozenset({0}), frozenset({45}))


def test_parse_groups_reads_native_4_byte_gids() -> None:
    assert parse_groups(struct.pack("=3I", 0, 27, 4_000_000_000)) == {0, 27, 4_000_000_000}
    assert parse_groups(b"") == frozenset()
    assert parse_groups(struct.pack("=I", 5) + b"\x01\x02") == {5}


def test_peer_credentials_of_a_real_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = peer_credentials(left)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert peer.groups == frozenset(os.getgroups())
