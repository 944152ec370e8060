"""Logging: the JSON line format, stdlib routing, journald priorities and secret redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from aisd.logs import (
    REDACTED,
    configure_logging,
    get_logger,
    log_lines,
    redact,
    register_secret,
)
from aisd.settings import Settings

API_KEY = "apikey-0123456789abcdef"


@pytest.fixture(autouse=True)
def reset_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_fields_and_bound_ids() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(importId="imp-1", tokenId="tok-1")
    get_logger("aisd.test").info("import.started", ownerExternalId="o-1")
    get_logger("aisd.test").debug("hidden at info")
    [line] = lines(out)
    assert line["event"] == "import.started"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert (line["importId"], line["tokenId"], line["ownerExternalId"]) == ("imp-1", "tok-1", "o-1")


def test_secrets_never_reach_the_output() -> None:
    out = io.StringIO()
    settings = Settings(api_key=SecretStr(API_KEY))
    configure_logging(settings, stream=out, secrets=["extra-secret-42"])
    register_secret("runtime-signature-777")
    log = get_logger("aisd.test")
    log.info(
        "consent.received",
        tokenId="tok-9",
        params={
            "sessionIdSignature": "sig-AAAA",
            "nested": [{"multipleAccessId": "mai-BBBB", "note": f"key={API_KEY}"}],
            "headers": {"X-Api-Key": "hdr-CCCC", "Authorization": "Bearer DDDD"},
        },
        session_signature="sig-EEEE",
        password="pw-FFFF",
        secret_value=SecretStr("ss-GGGG"),
        message="contains runtime-signature-777 and extra-secret-42",
        token_id="tok-10",
    )
    try:
        raise RuntimeError(f"upstream refused {API_KEY}")
    except RuntimeError:
        log.exception("import.failed")
    logging.getLogger("httpx").warning("GET https://x/?k=%s", API_KEY)
    try:
        raise ValueError("runtime-signature-777")
    except ValueError:
        logging.getLogger("apscheduler").exception("job crashed")
    text = out.getvalue()
    for secret in (
        API_KEY,
        "sig-AAAA",
        "mai-BBBB",
        "hdr-CCCC",
        "DDDD",
        "sig-EEEE",
        "pw-FFFF",
        "ss-GGGG",
        "runtime-signature-777",
        "extra-secret-42",
    ):
        assert secret not in text
    first, failed, httpx_line, job = lines(out)
    assert first["tokenId"] == "tok-9"
    assert first["token_id"] == "tok-10"
    assert first["params"]["nested"][0]["note"] == f"key={REDACTED}"
    assert first["params"]["sessionIdSignature"] == REDACTED
    assert failed["exception"][0]["exc_value"] == f"upstream refused {REDACTED}"
    assert "\n" not in out.getvalue().splitlines()[1]
    assert httpx_line["logger"] == "httpx"
    assert httpx_line["level"] == "warning"
    assert job["exception"][0]["exc_type"] == "ValueError"


def test_stdlib_loggers_share_the_format_and_httpx_is_quiet() -> None:
    out = io.StringIO()
    configure_logging(log_level="debug", stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    logging.getLogger("httpcore").debug("connect")
    logging.getLogger("aiosqlite").debug("executing")
    logging.getLogger("uvicorn.error").info("Started server process")
    got = [(line["logger"], line["level"], line["event"]) for line in lines(out)]
    assert got == [
        ("aiosqlite", "debug", "executing"),
        ("uvicorn.error", "info", "Started server process"),
    ]


def test_journald_priority_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    configure_logging(log_level="debug", stream=out)
    log = get_logger("aisd.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    logging.getLogger("apscheduler").warning("stdlib")
    prefixes = [line[:3] for line in out.getvalue().splitlines()]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<4>"]
    assert json.loads(out.getvalue().splitlines()[0][3:])["event"] == "d"


def test_console_format_redacts_too() -> None:
    out = io.StringIO()
    configure_logging(log_format="console", stream=out, secrets=["console-secret-1"])
    log = get_logger("aisd.test")
    log.info("hello", signature="s-1", tokenId="tok-1")
    try:
        raise RuntimeError("console-secret-1")
    except RuntimeError:
        log.exception("boom")
    text = out.getvalue()
    assert "hello" in text
    assert "tokenId=tok-1" in text
    assert "console-secret-1" not in text
    assert "s-1" not in text
    assert "RuntimeError" in text


@pytest.mark.parametrize("journal", [False, True])
def test_lines_logged_together_are_the_lines_logged_one_by_one(
    monkeypatch: pytest.MonkeyPatch, journal: bool
) -> None:
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    configure_logging(stream=out, secrets=["batch-secret-99"])
    entries: list[tuple[int, str, dict[str, Any]]] = [
        (logging.INFO, "consent.received", {"eventId": 1, "note": "has batch-secret-99 in it"}),
        (logging.WARNING, "import.failed", {"eventId": 2, "sessionIdSignature": "sig-1"}),
        (logging.DEBUG, "below.the.level", {"eventId": 3}),
        (logging.INFO, "nested", {"eventId": 4, "data": {"apiKey": "k-1", "ok": [1, "two"]}}),
    ]
    for level, event, fields in entries:
        get_logger("aisd.events").log(level, event, **fields)
    one_by_one = out.getvalue().splitlines()
    out.seek(0)
    out.truncate()
    log_lines("aisd.events", entries)
    together = out.getvalue().splitlines()

    def without_time(line: str) -> tuple[str, dict[str, Any]]:
        prefix, body = (line[:3], line[3:]) if journal else ("", line)
        parsed = json.loads(body)
        assert parsed.pop("timestamp").endswith("Z")
        return prefix, parsed

    assert len(together) == 3
    assert [without_time(line) for line in together] == [without_time(x) for x in one_by_one]
    # Same keys in the same order, not only the same values.
    assert [list(json.loads(line[3:] if journal else line)) for line in together] == [
        list(json.loads(line[3:] if journal else line)) for line in one_by_one
    ]
    assert "batch-secret-99" not in out.getvalue()
    assert "sig-1" not in out.getvalue()


def test_lines_logged_together_reach_a_capture_too() -> None:
    configure_logging(stream=io.StringIO())
    with structlog.testing.capture_logs() as logs:
        log_lines("aisd.events", [(logging.WARNING, "import.failed", {"eventId": 7})])
    assert logs == [{"event": "import.failed", "eventId": 7, "log_level": "warning"}]


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
secret_keys = st.sampled_from(
    [
        "api_key",
        "X-Api-Key",
        "apikey",
        "signature",
        "sessionIdSignature",
        "session_signature",
        "multipleAccessId",
        "multiple_access_id",
        "password",
        "authorization",
        "SECRET",
    ]
)


@given(
    st.recursive(
        json_leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
            st.builds(
                lambda k, d: {**d, k: "hush-hush-value"},
                secret_keys,
                st.dictionaries(st.text(max_size=8), children, max_size=3),
            ),
        ),
        max_leaves=20,
    )
)
def test_redact_removes_secret_keyed_values_at_any_depth(tree: object) -> None:
    event = redact(None, "info", {"event": "x", "payload": tree})
    assert "hush-hush-value" not in json.dumps(event)
    assert event["event"] == "x"
