"""/metrics: the registry's names and values, the HTTP endpoint, promtool, and the alert rules'
use of the names."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aisd.clock import SystemClock
from aisd.metrics import Metrics, Runtime
from aisd.metrics_server import serve_metrics
from aisd.store import ConsentIn, EventRecord, SqliteStore, open_store
from tests import store_calls as sc

pytestmark = pytest.mark.anyio

RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "aisd-alerts.yml"
PROMTOOL = shutil.which("promtool")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "aisd.db") as opened:
        yield opened


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped[(name, frozenset(labels.items()))]


async def consent(store: SqliteStore, n: int, *, expires_in: timedelta) -> str:
    now = datetime.now(UTC)
    outcome = await store.submit_consent(
        ConsentIn(f"owner-{n}", f"sess-{n}", "sig", multiple_access_id=f"mai-{n}"),
        now=now,
        since=now.date() - timedelta(days=30),
        expires_at=now + expires_in,
    )
    return outcome.import_id


async def test_scrape_reads_the_store_and_the_hooks(store: SqliteStore) -> None:
    metrics = Metrics(store, SystemClock(), max_running_commands=8)
    metrics.attach(
        Runtime(
            running_commands=lambda: 3,
            slot_limit=lambda: 6,
            storage_ok=lambda: False,
            webhook_lags=None,
        )
    )
    first = await consent(store, 1, expires_in=timedelta(days=3))
    await consent(store, 2, expires_in=timedelta(days=100))
    metrics.upstream_call("reuse_multiple_access", "MultipleAccessLimitExceeded", 0.2)
    metrics.upstream_call("import_result", "Weird name <from upstream> " * 9, 0.1)
    metrics.command_ended(10.15, 8.0, 10.0)
    metrics.planner_ticked(0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(metrics.run)
        for event in await sc.list_events(store, after=0, limit=10):
            metrics.observe(event)
        metrics.observe(
            EventRecord(
                99,
                datetime.now(UTC),
                "quota.deferred",
                None,
                None,
                None,
                {"reason": "upstream_limit"},
            )
        )
        metrics.observe(
            EventRecord(
                100,
                datetime.now(UTC),
                "import.succeeded",
                None,
                None,
                first,
                {"durationSeconds": 12.5},
            )
        )
        with anyio.fail_after(5):
            while True:
                scraped = samples(await metrics.scrape())
                if value(
                    scraped, "aisd_imports_finished_total", kind="initial", state="successful"
                ):
                    break
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert value(scraped, "aisd_tokens", state="active") == 2
    assert value(scraped, "aisd_import_queue_depth", kind="initial") == 2
    assert value(scraped, "aisd_import_queue_depth", kind="refresh") == 0
    assert value(scraped, "aisd_tokens_expiring_soon") == 1
    assert value(scraped, "aisd_tokens_stale") == 0
    assert value(scraped, "aisd_running_commands") == 3
    assert value(scraped, "aisd_running_commands_limit") == 6
    assert value(scraped, "aisd_running_commands_max") == 8
    assert value(scraped, "aisd_storage_up") == 0
    assert value(scraped, "aisd_event_feed_head") == 2
    assert value(scraped, "aisd_events_total", type="consent.received") == 2
    assert value(scraped, "aisd_quota_deferrals_total", reason="upstream_limit") == 1
    assert value(scraped, "aisd_import_duration_seconds_count", kind="initial") == 1
    assert (
        value(
            scraped,
            "aisd_upstream_requests_total",
            endpoint="reuse_multiple_access",
            outcome="MultipleAccessLimitExceeded",
        )
        == 1
    )
    assert value(scraped, "aisd_command_end_poll_delay_seconds_count") == 1
    assert (
        value(scraped, "aisd_upstream_requests_total", endpoint="import_result", outcome="other")
        == 1
    )
    assert value(scraped, "aisd_planner_tick_duration_seconds_count") == 1
    # Nothing personal in any label: owners, tokens and imports stay out.
    labels = {v for key in scraped for _, v in key[1]}
    assert not any(v.startswith(("owner-", "tok_", "imp_", "mai-")) for v in labels)


async def test_stale_tokens_count_active_ones_without_a_recent_import(store: SqliteStore) -> None:
    metrics = Metrics(store, SystemClock(), max_running_commands=8)
    await consent(store, 1, expires_in=timedelta(days=100))
    # A day later the token still has no import.
    counts = await sc.ops_counts(
        store,
        now=datetime.now(UTC) + timedelta(days=2),
        expiring_within=timedelta(days=7),
        stale_after=timedelta(days=1),
    )
    assert counts.tokens_stale == 1
    assert samples(await metrics.scrape())  # no runtime attached: the store's values only


async def http_get(port: int, request: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    return data


async def test_http_endpoint(store: SqliteStore) -> None:
    metrics = Metrics(store, SystemClock(), max_running_commands=8)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, "127.0.0.1", 0, metrics.scrape)
        ok = await http_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Type: text/plain; version=0.0.4" in head
        assert b"aisd_build_info{" in body
        assert (await http_get(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await http_get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await http_get(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await http_get(port, b"G" * 20000)).startswith(b"HTTP/1.1 400")
        tg.cancel_scope.cancel()


async def test_http_head_and_a_failing_scrape() -> None:
    async def broken() -> bytes:
        raise RuntimeError("the store is gone")

    async def fine() -> bytes:
        return b"x 1\n"

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, "127.0.0.1", 0, fine)
        head = await http_get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Length: 4\r\n" in head
        assert head.endswith(b"\r\n\r\n")
        failing = await tg.start(serve_metrics, "127.0.0.1", 0, broken)
        answer = await http_get(failing, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert b"the store is gone" not in answer
        tg.cancel_scope.cancel()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
async def test_promtool_accepts_the_exposition(store: SqliteStore) -> None:
    await consent(store, 1, expires_in=timedelta(days=3))
    text = await Metrics(store, SystemClock(), max_running_commands=8).scrape()
    assert PROMTOOL is not None
    proc = await anyio.run_process([PROMTOOL, "check", "metrics"], input=text, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == b""


async def test_alert_rules_use_only_exported_names(store: SqliteStore) -> None:
    exported = {
        sample_name
        for sample_name, _ in samples(
            await Metrics(store, SystemClock(), max_running_commands=8).scrape()
        )
    }
    used = set(re.findall(r"\baisd_[a-z_]+\b", RULES.read_text()))
    assert used, "the rules use aisd's metrics"
    assert used <= exported | {"aisd_webhook_lag_seconds"}, used - exported
