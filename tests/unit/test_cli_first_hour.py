"""The traps of a first hour with the CLI: finding the daemon, option checks, exit codes, the
sandbox command, replay of a database that is not there, and "next refresh" wording."""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aisd import _cli_format as fmt
from aisd.cli import main, socket_candidates
from tests.integration.test_client import FakeDaemon
from tests.unit.test_cli import clean_env  # noqa: F401 - the same clean environment

STATUS = {"version": "0.1.0", "tokens": {}, "imports": {}}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="aisd-cli-") as name:
        yield Path(name)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> Path:
    """Where /run/aisd/aisd.sock stands in for this test (the real one is not ours)."""
    path = short_dir / "run" / "aisd.sock"
    path.parent.mkdir()
    monkeypatch.setattr("aisd.cli._INSTALLED_SOCKET", path)
    return path


def test_the_candidates_come_in_the_documented_order(
    monkeypatch: pytest.MonkeyPatch, installed: Path
) -> None:
    assert socket_candidates() == [installed, Path("aisd.sock")]
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/x:/run/y")
    assert socket_candidates() == [Path("/run/x/aisd.sock"), installed, Path("aisd.sock")]


@pytest.mark.parametrize("where", ["runtime", "installed", "cwd"])
def test_the_cli_finds_the_daemon_without_being_told(
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    installed: Path,
    short_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime = short_dir / "rt"
    runtime.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    path = {"runtime": runtime / "aisd.sock", "installed": installed, "cwd": Path("aisd.sock")}
    with FakeDaemon(path[where]) as daemon:
        daemon.results["daemon.status"] = STATUS
        assert main(["status", "--json"]) == 0
        assert '"version": "0.1.0"' in capsys.readouterr().out
        assert [r["method"] for r in daemon.requests] == ["daemon.status"]


def test_when_none_answers_the_cli_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch,
    installed: Path,
    short_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(short_dir))
    # A stale socket file nobody listens on is passed over, not taken for the daemon.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "aisd.sock"))
    stale.close()
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    for tried in (short_dir / "aisd.sock", installed, Path("aisd.sock")):
        assert str(tried) in err
    assert "AISD_SOCKET_PATH" in err


def test_an_explicit_socket_is_used_as_given(
    monkeypatch: pytest.MonkeyPatch, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeDaemon(installed) as daemon:
        daemon.results["daemon.status"] = STATUS
        monkeypatch.setenv("AISD_SOCKET_PATH", "/nonexistent/aisd.sock")
        assert main(["status"]) == 1
        assert "/nonexistent/aisd.sock" in capsys.readouterr().err
        assert daemon.requests == []


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", "-0.5"])
def test_timeout_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--timeout", value]) == 2
    assert "--timeout" in capsys.readouterr().err


def test_params_the_daemon_refuses_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeDaemon(short_dir / "d.sock") as daemon:
        monkeypatch.setenv("AISD_SOCKET_PATH", str(daemon.path))
        daemon.errors["import.get"] = {
            "code": -32602,
            "message": "invalid params: 'importId' must be a string of 1 to 512 characters",
            "data": {"field": "importId"},
        }
        assert main(["imports", "x" * 600]) == 2
        assert "importId" in capsys.readouterr().err
        daemon.errors["import.get"] = {"code": -32004, "message": "import not found"}
        assert main(["imports", "imp_x"]) == 1


@pytest.mark.parametrize("port", ["0", "65536", "http", "-80"])
def test_sandbox_port_is_validated(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--port", port]) == 2
    assert "port number from 1 to 65535" in capsys.readouterr().err


def test_replay_of_a_missing_database_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "aisd.db"
    monkeypatch.setenv("AISD_DB_PATH", str(missing))
    assert main(["replay"]) == 2
    assert "AISD_DB_PATH" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_next_refresh_is_never_just_now() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def at(delta: timedelta) -> str:
        return (now + delta).isoformat().replace("+00:00", "Z")

    made = {"nextRefreshAt": at(timedelta(seconds=-5)), "lastImportAt": at(timedelta(0))}
    assert fmt.next_refresh(made, now) == "being planned"
    due = {"nextRefreshAt": at(timedelta(seconds=-5)), "lastImportAt": at(timedelta(hours=-6))}
    assert fmt.next_refresh(due, now) == "due now"
    assert fmt.next_refresh({"nextRefreshAt": at(timedelta(seconds=20))}, now) == "in <1 min"
    assert fmt.next_refresh({"nextRefreshAt": at(timedelta(hours=5))}, now) == "in 5 h"
    assert fmt.next_refresh({"nextRefreshAt": None}, now) == "-"
    table = fmt.render_tokens({"tokens": [{"tokenId": "t", **made}]}, now, explain=True)
    header, row = table.splitlines()[:2]
    columns = dict(zip(re.split(r"\s{2,}", header), re.split(r"\s{2,}", row), strict=True))
    assert (columns["LAST IMPORT"], columns["NEXT REFRESH"]) == ("just now", "being planned")
    assert "next refresh: being planned" in table


def test_sandbox_ctl_against_a_daemon_without_a_sandbox_says_so(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeDaemon(short_dir / "d.sock") as daemon:
        monkeypatch.setenv("AISD_SOCKET_PATH", str(daemon.path))
        assert main(["sandbox-ctl", "status"]) == 1
        assert "without --sandbox" in capsys.readouterr().err
        daemon.results["sandbox.advance"] = {"now": "2026-12-02T10:00:00Z"}
        assert main(["sandbox-ctl", "advance", "1d"]) == 0
        assert daemon.params("sandbox.advance") == [{"seconds": 86400}]
        assert '"now": "2026-12-02T10:00:00Z"' in capsys.readouterr().out
        for bad in ("0s", "1w", "-5m", "soon"):
            assert main(["sandbox-ctl", "advance", bad]) == 2
