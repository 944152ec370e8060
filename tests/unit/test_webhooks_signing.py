"""Webhook signing, retry back-off and endpoint labels (pure), and their settings."""

from __future__ import annotations

import base64
import io
import logging
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from aisd.logs import configure_logging, get_logger
from aisd.settings import (
    Settings,
    SettingsError,
    decode_webhook_secret,
    load_settings,
    parse_listen,
)
from aisd.webhooks import RETRY_CAP_SECONDS, endpoint_label, retry_delay, sign, signature_header

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@given(st.text(min_size=1, max_size=20), st.binary(max_size=300), st.integers(0, 2**33))
def test_signature_verifies_with_the_standard_webhooks_library(
    msg_id: str, body: bytes, timestamp: int
) -> None:
    body_text = body.decode("latin-1")
    raw = body_text.encode()
    signature = sign(KEY, msg_id, timestamp, raw)
    expected = Webhook(SECRET).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body_text)
    assert signature == expected


def test_library_verifies_a_fresh_delivery_and_refuses_another_secret() -> None:
    body = b'{"id":7,"type":"import.succeeded"}'
    now = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "7",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(KEY, "7", now, body),
    }
    assert Webhook(SECRET).verify(body, headers) == {"id": 7, "type": "import.succeeded"}
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    tampered = body.replace(b"7", b"8")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)


def test_two_secrets_during_a_rotation_both_verify() -> None:
    new_key = bytes(range(100, 132))
    new_secret = "whsec_" + base64.b64encode(new_key).decode()
    body = b'{"id":3}'
    now = int(datetime.now(UTC).timestamp())
    header = signature_header([KEY, new_key], "3", now, body)
    assert header.count("v1,") == 2
    headers = {"webhook-id": "3", "webhook-timestamp": str(now), "webhook-signature": header}
    assert Webhook(SECRET).verify(body, headers) == {"id": 3}
    assert Webhook(new_secret).verify(body, headers) == {"id": 3}


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0.01, max_value=600))
def test_retry_delay_doubles_within_its_ceiling_and_never_exceeds_the_cap(
    attempts: int, base: float
) -> None:
    rng = random.Random(attempts)
    ceiling = min(RETRY_CAP_SECONDS, base * 2.0 ** min(attempts - 1, 32))
    delay = retry_delay(attempts, base=base, rng=rng)
    assert ceiling / 2 <= delay <= ceiling <= RETRY_CAP_SECONDS


def test_retry_delays_grow_and_spread() -> None:
    rng = random.Random(1)
    firsts = {round(retry_delay(1, base=1.0, rng=rng), 6) for _ in range(20)}
    assert len(firsts) > 1, "jitter: endpoints failing together do not retry together"
    assert retry_delay(30, base=1.0, rng=rng) >= RETRY_CAP_SECONDS / 2


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://user:pw@hooks.example.com/aisd?token=abc#x", "https://hooks.example.com/aisd"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://[::1]:9000/in", "http://[::1]:9000/in"),
    ],
)
def test_endpoint_label_drops_credentials_and_query(url: str, label: str) -> None:
    assert endpoint_label(url) == label


def test_secret_format() -> None:
    assert decode_webhook_secret(SECRET) == KEY
    for bad in ("abc", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="whsec_"):
            decode_webhook_secret(bad)


def test_listen_format() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen("localhost:1") == ("localhost", 1)
    for bad in ("9464", "host:0", "host:70000", "a b:1", "http://x:1"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AISD_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_webhook_secret_from_credentials_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "aisd_webhook_secret").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("AISD_WEBHOOK_URL", "https://a.example/x, https://b.example/y")
    monkeypatch.setenv("AISD_WEBHOOK_EVENTS", "import.succeeded,token.reauth_required")
    s = load_settings(sandbox=True)
    assert s.webhook_url == ("https://a.example/x", "https://b.example/y")
    assert s.webhook_keys == (KEY,)
    assert s.webhook_events == {"import.succeeded", "token.reauth_required"}


@pytest.mark.usefixtures("clean_env")
def test_webhook_settings_errors_name_the_setting_never_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AISD_WEBHOOK_URL", "https://a.example/x")
    with pytest.raises(SettingsError, match="aisd_webhook_secret"):
        load_settings(sandbox=True)
    monkeypatch.setenv("AISD_WEBHOOK_SECRET", "whsec_not-base64-SECRETVALUE")
    with pytest.raises(SettingsError) as info:
        load_settings(sandbox=True)
    assert "AISD_WEBHOOK_SECRET" in str(info.value)
    assert "SECRETVALUE" not in str(info.value)
    monkeypatch.setenv("AISD_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("AISD_WEBHOOK_URL", "ftp://a.example/x")
    with pytest.raises(SettingsError, match="AISD_WEBHOOK_URL"):
        load_settings(sandbox=True)
    monkeypatch.setenv("AISD_WEBHOOK_URL", "https://a.example/x")
    monkeypatch.setenv("AISD_WEBHOOK_EVENTS", "Import Succeeded")
    with pytest.raises(SettingsError, match="AISD_WEBHOOK_EVENTS"):
        load_settings(sandbox=True)
    monkeypatch.delenv("AISD_WEBHOOK_EVENTS")
    monkeypatch.setenv("AISD_METRICS_LISTEN", "9464")
    with pytest.raises(SettingsError, match="AISD_METRICS_LISTEN"):
        load_settings(sandbox=True)


def test_webhook_secrets_and_credentialed_urls_never_reach_a_log_line() -> None:
    new_secret = "whsec_" + base64.b64encode(bytes(range(40, 72))).decode()
    url = "https://user:pw-9911@hooks.example.com/in?token=tk-8822"
    settings = Settings(webhook_url=(url,), webhook_secret=SecretStr(f"{SECRET}  {new_secret}\n"))
    assert settings.webhook_keys == (KEY, bytes(range(40, 72)))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        configure_logging(settings, stream=out)
        get_logger("aisd.test").warning("oops", detail=f"{SECRET} {new_secret} posting to {url}")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue()
    for leaked in (SECRET, new_secret, "pw-9911", "tk-8822"):
        assert leaked not in text
    assert "posting to" in text
