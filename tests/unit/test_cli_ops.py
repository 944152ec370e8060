"""``aisd webhooks`` against a fake daemon, and the parsing of ``backup`` and ``restore``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aisd.cli import main
from tests.integration.test_client import FakeDaemon


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeDaemon]:
    for name in list(os.environ):
        if name.upper().startswith("AISD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with (
        tempfile.TemporaryDirectory(dir="/tmp", prefix="aisd-") as name,
        FakeDaemon(Path(name) / "d.sock") as daemon,
    ):
        monkeypatch.setenv("AISD_SOCKET_PATH", str(daemon.path))
        yield daemon


def endpoint() -> dict[str, object]:
    # Times relative to now, made when the test runs (collection may be minutes earlier).
    return {
        "endpoint": "https://hooks.example.com/aisd",
        "cursor": 40,
        "head": 52,
        "lagEvents": 12,
        "lagSeconds": 310.5,
        "attempts": 4,
        "nextAttemptAt": iso(timedelta(minutes=3)),
        "lastSuccessAt": iso(-timedelta(minutes=6)),
        "lastError": {"message": "HTTP 503", "at": iso(-timedelta(seconds=5))},
    }


def test_webhooks_status_table(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["webhooks.status"] = {"endpoints": [endpoint()]}
    assert main(["webhooks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "endpoint",
        "cursor",
        "lag",
        "oldest",
        "waiting",
        "last",
        "success",
        "retry",
    ]
    assert lines[1].split()[:5] == ["https://hooks.example.com/aisd", "40/52", "12", "310.5", "s"]
    assert "6 min ago" in lines[1]
    assert "in 3 min" in lines[1]
    assert lines[2] == ("https://hooks.example.com/aisd: last error just now: HTTP 503 (attempt 4)")


def test_webhooks_none_configured(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["webhooks.status"] = {"endpoints": []}
    assert main(["webhooks"]) == 0
    assert "no webhook endpoint configured" in capsys.readouterr().out


def test_webhooks_redeliver(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["webhooks.redeliver"] = {"endpoints": [{**endpoint(), "cursor": 9}]}
    assert main(["webhooks", "--redeliver-from", "10", "--endpoint", "https://h/x"]) == 0
    assert "9/52" in capsys.readouterr().out
    assert fake.params("webhooks.redeliver") == [{"from": 10, "endpoint": "https://h/x"}]
    assert main(["webhooks", "--redeliver-from", "3", "--json"]) == 0
    assert fake.params("webhooks.redeliver")[-1] == {"from": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ["webhooks", "--endpoint", "https://h/x"],
        ["webhooks", "--redeliver-from", "0"],
        ["backup"],
        ["restore"],
    ],
)
def test_usage_errors_exit_2(
    fake: FakeDaemon, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2


def test_backup_without_a_database_exits_1(
    fake: FakeDaemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AISD_DB_PATH", str(tmp_path / "none.db"))
    assert main(["backup", str(tmp_path / "b.db")]) == 1
    assert "backup failed: no database at" in capsys.readouterr().err
