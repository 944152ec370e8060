"""/metrics end to end: scrapes of the real daemon during a run, checked by ``promtool check
metrics`` and consistent with ``daemon.status``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import DaemonProcess, SandboxServer, all_events, wait_final, wait_for

pytestmark = pytest.mark.slow

PROMTOOL = shutil.which("promtool")

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body: bytes = response.read()
        return body


def _promtool_check(text: bytes) -> None:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == b"", "promtool found lint problems"


def _parse(text: bytes) -> Samples:
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[sample.name][frozenset(sample.labels.items())] = sample.value
    return out


def _one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_scrapes_pass_promtool_and_agree_with_daemon_status(
    daemon: DaemonProcess, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    port = _free_port()
    daemon.start(AISD_METRICS_LISTEN=f"127.0.0.1:{port}")
    imports = []
    for n in range(4):
        consent = sandbox_server.mint(f"metrics-{n}", multiple_access=n != 3)
        imports.append(
            daemon.client.submit_consent(
                consent.owner_external_id,
                consent.session_id,
                consent.signature,
                multiple_access_id=consent.multiple_access_id,
            )["importId"]
        )
    # During the run: imports queued and running.
    during = _scrape(port)
    _promtool_check(during)
    assert _parse(during)["aisd_build_info"]

    views = wait_final(daemon.client, imports, timeout=60)
    succeeded = [v for v in views if v["state"] == "successful"]

    def counted() -> bool | None:
        # The event log hands each finished import to the metrics a moment after it ends.
        done = _parse(_scrape(port))["aisd_imports_finished_total"]
        return True if sum(done.values()) == len(views) else None

    wait_for(counted, timeout=20, what="finished imports to be counted")
    status = daemon.client.status()
    after = _scrape(port)
    _promtool_check(after)
    samples = _parse(after)

    for state, n in status["tokens"].items():
        assert _one(samples, "aisd_tokens", state=state) == n
    assert sum(samples["aisd_tokens"].values()) == sum(status["tokens"].values())
    assert sum(samples["aisd_import_queue_depth"].values()) == status["queued"]
    assert _one(samples, "aisd_running_commands") == status["runningCommands"]
    assert _one(samples, "aisd_running_commands_limit") == status["slotLimit"]
    assert _one(samples, "aisd_storage_up") == (1 if status["storage"]["ok"] else 0)
    assert _one(samples, "aisd_imports_failed_last_hour") == status["failedLastHour"]
    assert _one(samples, "aisd_event_feed_head") == all_events(daemon.client)[-1]["id"]
    assert _one(samples, "aisd_imports_finished_total", kind="initial", state="successful") == len(
        succeeded
    )
    assert _one(samples, "aisd_import_duration_seconds_count", kind="initial") == len(succeeded)
    assert (
        _one(samples, "aisd_upstream_requests_total", endpoint="default_import", outcome="ok")
        == sandbox_server.stats().commands_created
    )
    polls = sum(len(p) for p in sandbox_server.stats().polls_by_command.values())
    assert _one(
        samples, "aisd_upstream_requests_total", endpoint="import_result", outcome="ok"
    ) == (polls)
    assert _one(samples, "aisd_command_end_poll_delay_seconds_count") == len(imports)
    assert _one(samples, "aisd_planner_tick_duration_seconds_count") >= 1
    # No owner id in any label.
    labels = {v for series in samples.values() for key in series for _, v in key}
    assert not any("metrics-" in v for v in labels)
    assert daemon.terminate() < 10
