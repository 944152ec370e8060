"""Webhooks end to end: the real daemon POSTs to a real HTTP receiver that verifies every
delivery with the ``standardwebhooks`` package, through outages, 500s and a SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from aisd.sandbox import MintedConsent
from tests.e2e.conftest import DaemonProcess, SandboxServer, all_events, wait_final, wait_for

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-32-bytes-long").decode()
RETRY_SECONDS = "0.1"


@dataclass
class Delivery:
    """One request the receiver got, as sent."""

    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    """An HTTP endpoint on a fixed port; it answers ``status`` and verifies each 2xx delivery
    (a delivery that fails verification is answered 400 and recorded as such)."""

    port: int
    status: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    verified: list[dict[str, Any]] = field(default_factory=list)
    hold: Callable[[dict[str, Any]], threading.Event | None] = lambda payload: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/aisd"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.status
                payload: dict[str, Any] | None = None
                if 200 <= status < 300:
                    try:
                        payload = Webhook(SECRET).verify(body, headers)
                    except WebhookVerificationError:
                        status = 400
                if payload is not None:
                    held = receiver.hold(payload)
                    if held is not None:
                        held.wait(timeout=30)
                with receiver.lock:
                    receiver.deliveries.append(Delivery(body, headers, status))
                    if payload is not None and status < 300:
                        receiver.verified.append(payload)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ok_ids(self) -> list[int]:
        with self.lock:
            return [int(p["id"]) for p in self.verified]

    def count(self) -> int:
        with self.lock:
            return len(self.deliveries)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(_free_port())
    try:
        yield made
    finally:
        made.stop()


def _configure(daemon: DaemonProcess, tmp_path: Path, receiver: Receiver) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    secret_file = creds / "aisd_webhook_secret"
    secret_file.write_text(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    daemon.env.update(
        CREDENTIALS_DIRECTORY=str(creds),
        AISD_WEBHOOK_URL=receiver.url,
        AISD_WEBHOOK_RETRY_SECONDS=RETRY_SECONDS,
    )


def _submit(daemon: DaemonProcess, consent: MintedConsent) -> str:
    ids = daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )
    import_id: str = ids["importId"]
    return import_id


def _endpoint(daemon: DaemonProcess) -> dict[str, Any]:
    (endpoint,) = daemon.client.webhooks()["endpoints"]
    assert isinstance(endpoint, dict)
    return endpoint


def _wait_delivered(daemon: DaemonProcess, receiver: Receiver, *, timeout: float) -> None:
    def done() -> bool | None:
        head = daemon.client.events(after=0, limit=1)  # the feed answers
        assert head is not None
        endpoint = _endpoint(daemon)
        if endpoint["lagEvents"] == 0 and endpoint["cursor"] == endpoint["head"] > 0:
            return True
        return None

    wait_for(done, timeout=timeout, what="every event to be delivered")


def test_every_event_arrives_in_order_through_an_outage_and_500s(
    daemon: DaemonProcess, sandbox_server: SandboxServer, receiver: Receiver, tmp_path: Path
) -> None:
    _configure(daemon, tmp_path, receiver)
    daemon.start()
    # The receiver is down: connections are refused.
    imports = [_submit(daemon, sandbox_server.mint(f"hook-{n}")) for n in range(3)]
    down = wait_for(
        lambda: _endpoint(daemon) if _endpoint(daemon)["attempts"] >= 2 else None,
        timeout=20,
        what="failed attempts while the receiver is down",
    )
    assert "ConnectError" in down["lastError"]["message"]
    assert down["lagEvents"] == down["head"] >= 3
    assert down["lastSuccessAt"] is None

    # Up, but failing: each attempt is answered 500 and nothing moves.
    receiver.status = 500
    receiver.start()
    wait_for(lambda: receiver.count() >= 2 or None, timeout=20, what="two 500 answers")
    failing = _endpoint(daemon)
    assert failing["lastError"]["message"] == "HTTP 500"
    assert failing["cursor"] == 0
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {"1"}, (
        "the first event holds back the later ones"
    )

    receiver.status = 200
    wait_final(daemon.client, imports, timeout=60)
    _wait_delivered(daemon, receiver, timeout=60)
    feed = all_events(daemon.client)
    # Exactly the feed, in order, each once (no crash happened, so no duplicate).
    assert receiver.verified == feed
    ok = [d for d in receiver.deliveries if d.status == 200]
    assert [d.headers["webhook-id"] for d in ok] == [str(e["id"]) for e in feed]
    # Each retry of an event carried the same webhook-id and a fresh, valid signature.
    first = [d for d in receiver.deliveries if d.headers["webhook-id"] == "1"]
    assert len(first) >= 3
    assert all(d.body == first[0].body for d in first)
    assert _endpoint(daemon)["lastSuccessAt"] is not None

    # A receiver with another secret rejects every one of them.
    other = Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode())
    for delivery in ok:
        with pytest.raises(WebhookVerificationError):
            other.verify(delivery.body, delivery.headers)
    assert daemon.terminate() < 10


def test_sigkill_mid_delivery_loses_nothing(
    daemon: DaemonProcess, sandbox_server: SandboxServer, receiver: Receiver, tmp_path: Path
) -> None:
    _configure(daemon, tmp_path, receiver)
    arrived = threading.Event()
    release = threading.Event()
    held: list[int] = []

    def hold(payload: dict[str, Any]) -> threading.Event | None:
        if payload["type"] == "import.started" and not arrived.is_set():
            held.append(payload["id"])
            arrived.set()
            return release
        return None

    receiver.hold = hold
    receiver.start()
    daemon.start()
    first = [_submit(daemon, sandbox_server.mint(f"kill-{n}")) for n in range(2)]
    assert arrived.wait(timeout=30), "the delivery to hold never came"
    daemon.kill(signal.SIGKILL)
    release.set()

    daemon.start()
    more = [_submit(daemon, sandbox_server.mint("after-restart"))]
    wait_final(daemon.client, first + more, timeout=60)
    _wait_delivered(daemon, receiver, timeout=60)
    feed = all_events(daemon.client)
    ids = receiver.ok_ids()
    # At least once: every event arrived; the one in flight at the kill may have come twice.
    assert set(ids) == {e["id"] for e in feed}
    # The daemon died before the answer: the held event came again after the restart, with
    # the same webhook-id; nothing else repeated.
    assert ids.count(held[0]) == 2
    assert len(ids) - len(set(ids)) == 1
    # In feed order, apart from that one repeat.
    firsts = list(dict.fromkeys(ids))
    assert firsts == sorted(firsts)
    by_id = {e["id"]: e for e in feed}
    for payload in receiver.verified:
        assert payload == by_id[payload["id"]]
    for delivery in receiver.deliveries:
        assert delivery.headers["webhook-id"] == str(json.loads(delivery.body)["id"])
