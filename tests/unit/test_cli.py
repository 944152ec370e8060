"""The ``aisd`` CLI: parsing, exit codes, rendering, against a fake JSON-RPC daemon."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from aisd import _cli_format as fmt
from aisd.cli import main
from aisd.settings import Settings
from tests.integration.test_client import FakeDaemon

SECRETISH = "sk_live_SECRET_1a2b3c4d5e6f"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("AISD_"):
            monkeypatch.delenv(name)
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    with (
        tempfile.TemporaryDirectory(dir="/tmp", prefix="aisd-") as name,
        FakeDaemon(Path(name) / "d.sock") as daemon,
    ):
        monkeypatch.setenv("AISD_SOCKET_PATH", str(daemon.path))
        yield daemon


def test_help_explains_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "Exit codes" in capsys.readouterr().out
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--env-file" in out
    assert "one row per transaction" in " ".join(out.split())


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["revoke"],
        ["revoke", "--token", "t", "--owner", "o"],
        ["billing", "--month", "2026-13"],
        ["billing"],
        ["refresh"],
        ["events", "--after", "-1"],
        ["data", "--owner", "o", "--format", "xml"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_semantic_usage_errors_exit_2(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--owner", "o"]) == 2
    assert "--session-id, --signature" in capsys.readouterr().err
    assert main(["data"]) == 2
    assert "--owner" in capsys.readouterr().err
    assert fake.requests == []


def test_bad_setting_exits_2_naming_it_not_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / "aisd.env"
    env.write_text(f"AISD_POLL_MIN_SECONDS={SECRETISH}\n")
    for argv in (["status", "--env-file", str(env)], ["run", "--env-file", str(env)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "AISD_POLL_MIN_SECONDS" in err
        assert SECRETISH not in err


def test_run_without_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "AISD_API_KEY is required" in capsys.readouterr().err


def test_run_hands_settings_to_the_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[Settings, bool]] = []

    def daemon_main(settings: Settings, *, sandbox: bool) -> int:
        seen.append((settings, sandbox))
        return 0

    monkeypatch.setitem(sys.modules, "aisd.daemon", types.SimpleNamespace(main=daemon_main))
    env = tmp_path / "aisd.env"
    env.write_text("AISD_LOG_FORMAT=console\nAISD_REFRESHES_PER_DAY=2\n")
    assert main(["run", "--sandbox", "--env-file", str(env)]) == 0
    [(settings, sandbox)] = seen
    assert sandbox is True
    assert settings.refreshes_per_day == 2


def test_unreachable_daemon_exits_1_naming_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nobody.sock"
    assert main(["status", "--socket", str(path)]) == 1
    assert str(path) in capsys.readouterr().err


def test_rpc_error_exits_1_with_code(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.errors["token.refresh"] = {
        "code": -32029,
        "message": "quota spent",
        "data": {"nextPossibleAt": iso(timedelta(hours=5, minutes=1))},
    }
    assert main(["refresh", "--token", "tok-1"]) == 1
    err = capsys.readouterr().err
    assert "-32029" in err
    assert "next possible in 5 h" in err


def test_tokens_table_with_relative_times(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    token = {
        "tokenId": "tok-1",
        "ownerExternalId": "owner-1",
        "state": "active",
        "createdAt": iso(-timedelta(days=3)),
        "expiresAt": iso(timedelta(days=177, minutes=1)),
        "lastImportAt": iso(-timedelta(minutes=3)),
        "nextRefreshAt": iso(timedelta(hours=5, minutes=1)),
        "refreshesLast24h": 2,
        "quota": [
            {
                "iban": "PL61109010140000071219812874",
                "used": 4,
                "limit": 4,
                "nextFreeAt": iso(timedelta(hours=2, minutes=1)),
            }
        ],
        "deferredReason": "quota",
    }
    fake.results["token.list"] = {"tokens": [token]}
    assert main(["tokens", "--owner", "owner-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "TOKEN",
        "OWNER",
        "STATE",
        "EXPIRES",
        "LAST",
        "IMPORT",
        "NEXT",
        "REFRESH",
        "24H",
    ]
    assert out[1].split() == [
        "tok-1",
        "owner-1",
        "active",
        "in",
        "177",
        "d",
        "3",
        "min",
        "ago",
        "in",
        "5",
        "h",
        "2",
    ]
    assert fake.params("token.list") == [{"ownerExternalId": "owner-1"}]

    assert main(["tokens", "--explain"]) == 0
    out_text = capsys.readouterr().out
    assert "deferred: quota" in out_text
    assert "PL61109010140000071219812874  4/4   in 2 h" in out_text

    assert main(["tokens", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tokens": [token]}


def test_imports_list_and_one(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    imp = {
        "importId": "imp-1",
        "ownerExternalId": "o",
        "tokenId": None,
        "kind": "initial",
        "state": "failed",
        "createdAt": iso(-timedelta(hours=3)),
        "finishedAt": iso(-timedelta(hours=2)),
        "accounts": 0,
        "transactions": 0,
        "error": {"name": "SessionExpired", "message": "session expired"},
    }
    fake.results["import.list"] = {"imports": [imp]}
    fake.results["import.get"] = imp
    assert main(["imports", "--state", "failed", "--limit", "5"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row == [
        "imp-1",
        "o",
        "initial",
        "failed",
        "3",
        "h",
        "ago",
        "2",
        "h",
        "ago",
        "0",
        "0",
        "SessionExpired",
    ]
    assert fake.params("import.list") == [{"state": "failed", "limit": 5}]
    assert main(["imports", "imp-1"]) == 0
    out = capsys.readouterr().out
    assert "state            failed\n" in out
    assert 'error            {"name":"SessionExpired","message":"session expired"}' in out
    assert "(3 h ago)" in out
    assert fake.params("import.get") == [{"importId": "imp-1"}]


OWNER_DATA: dict[str, Any] = {
    "ownerExternalId": "o",
    "owners": [],
    "accounts": [
        {
            "iban": "PL61109010140000071219812874",
            "name": "Konto, osobiste",
            "currencyName": "PLN",
            "currencyBalance": "100.00",
            "currencyFundsAvailable": "90.00",
            "updatedAt": "2026-11-28T10:00:00Z",
            "transactions": [
                {
                    "transactionOn": "2026-11-27",
                    "bookedOn": "2026-11-28",
                    "currencyAmount": "-20.00",
                    "currencyBalance": "100.00",
                    "title": 'Coffee, "large"',
                    "party": "Cafe",
                    "partyIban": None,
                    "kind": "CARD",
                    "status": "DONE",
                    "labels": ["food", "card"],
                },
                {
                    "transactionOn": "2026-11-26",
                    "bookedOn": "2026-11-26",
                    "currencyAmount": "120.00",
                    "currencyBalance": "120.00",
                    "title": "Salary",
                    "party": "Employer",
                    "partyIban": "PL27114020040000300201355387",
                    "kind": "TRANSFER",
                    "status": "DONE",
                    "labels": [],
                },
            ],
        },
        {
            "iban": "DE89370400440532013000",
            "currencyName": "EUR",
            "transactions": [{"transactionOn": "2026-11-01", "currencyAmount": "5.00"}],
        },
    ],
}


def test_data_csv(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["owner.data"] = OWNER_DATA
    assert main(["data", "--owner", "o", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == list(fmt.CSV_HEADER)
    assert len(rows) == 4
    assert rows[1][:7] == [
        "PL61109010140000071219812874",
        "PLN",
        "2026-11-27",
        "2026-11-28",
        "-20.00",
        "100.00",
        'Coffee, "large"',
    ]
    assert rows[1][11] == "food;card"
    assert rows[2][8] == "PL27114020040000300201355387"
    assert rows[3][:3] == ["DE89370400440532013000", "EUR", "2026-11-01"]
    assert fake.params("owner.data") == [{"ownerExternalId": "o"}]


def test_data_table_and_json(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["owner.data"] = OWNER_DATA
    assert main(["data", "--owner", "o", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == OWNER_DATA
    assert main(["data", "--owner", "o"]) == 0
    out = capsys.readouterr().out
    assert "PL61109010140000071219812874  Konto, osobiste  balance 100.00 PLN" in out
    assert "2026-11-27  -20.00" in out


def test_data_changes(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["data.changes"] = {
        "added": [{}, {}],
        "modified": [],
        "removed": [{}],
        "cursor": "c-2",
    }
    assert main(["data", "--changes", "--cursor", "c-1"]) == 0
    assert capsys.readouterr().out == "2 added, 0 modified, 1 removed\ncursor c-2\n"
    assert fake.params("data.changes") == [{"cursor": "c-1"}]


def test_submit_demo_mints_then_submits(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.results["sandbox.mint"] = {
        "ownerExternalId": "demo-1",
        "sessionId": "s-1",
        "sessionIdSignature": "sig-SECRET",
        "multipleAccessId": "mai-SECRET",
        "target": "KontoBank",
    }
    fake.results["consent.submit"] = {"importId": "imp-1", "tokenId": "tok-1"}
    assert main(["submit", "--demo"]) == 0
    assert capsys.readouterr().out == "import imp-1  token tok-1\n"
    assert [r["method"] for r in fake.requests] == ["sandbox.mint", "consent.submit"]
    assert fake.params("sandbox.mint") == [{"multipleAccess": True}]
    assert fake.params("consent.submit") == [
        {
            "ownerExternalId": "demo-1",
            "sessionId": "s-1",
            "sessionIdSignature": "sig-SECRET",
            "multipleAccessId": "mai-SECRET",
            "target": "KontoBank",
        }
    ]
    assert main(["submit", "--demo", "--single", "--owner", "me", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"importId": "imp-1", "tokenId": "tok-1"}
    assert fake.params("sandbox.mint")[1] == {"multipleAccess": False, "ownerExternalId": "me"}


def test_submit_explicit(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results["consent.submit"] = {"importId": "imp-3", "tokenId": None}
    argv = [
        "submit",
        "--owner",
        "o",
        "--session-id",
        "s",
        "--signature",
        "g",
        "--refresh-until",
        "2027-01-31",
        "--max-imports",
        "10",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out == "import imp-3  token -\n"
    assert fake.params("consent.submit") == [
        {
            "ownerExternalId": "o",
            "sessionId": "s",
            "sessionIdSignature": "g",
            "refreshUntil": "2027-01-31",
            "maxImports": 10,
        }
    ]


def test_events_follow_prints_as_they_come(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def events(params: dict[str, Any]) -> dict[str, Any]:
        if params["after"] == 0:
            return {
                "events": [
                    {
                        "id": 1,
                        "at": "2026-11-28T10:00:00Z",
                        "type": "import.started",
                        "importId": "imp-1",
                        "data": {},
                    }
                ],
                "next": 1,
            }
        fake.errors["events.list"] = {"code": -32603, "message": "stop"}
        return {
            "events": [
                {
                    "id": 2,
                    "at": "2026-11-28T10:00:05Z",
                    "type": "import.failed",
                    "importId": "imp-1",
                    "data": {"name": "X"},
                }
            ],
            "next": 2,
        }

    fake.results["events.list"] = events
    assert main(["events", "--follow"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "1  2026-11-28T10:00:00Z  import.started  import=imp-1",
        '2  2026-11-28T10:00:05Z  import.failed  import=imp-1  {"name":"X"}',
    ]
    assert "-32603" in captured.err
    assert [p["after"] for p in fake.params("events.list")] == [0, 1, 2]


def test_billing_status_forget_revoke(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.results.update(
        {
            "billing.report": {
                "month": "2026-11",
                "cycles": 3,
                "imports": 40,
                "tokens": [{"tokenId": "t", "ownerExternalId": "o", "cycles": 3, "imports": 40}],
            },
            "billing.forecast": {"months": [{"month": "2026-12", "cycles": 5}]},
            "daemon.status": {
                "version": "0.1.0",
                "startedAt": iso(-timedelta(hours=3)),
                "tokens": {"active": 2, "revoked": 1},
                "imports": {},
                "runningCommands": 1,
                "queued": 4,
            },
            "owner.forget": {"tokensRevoked": 2, "rowsDeleted": 17},
            "token.revoke": {"tokens": [{"tokenId": "t", "state": "revoked"}]},
        }
    )
    assert main(["billing", "--month", "2026-11"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "month 2026-11: 3 cycles, 40 imports"
    assert out[2].split() == ["t", "o", "3", "40"]
    assert main(["billing", "--forecast", "2"]) == 0
    assert "2026-12  5" in capsys.readouterr().out
    assert fake.params("billing.forecast") == [{"months": 2}]
    assert main(["status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].startswith("aisd 0.1.0, up 3 h")
    assert status[1:] == [
        "tokens:   2 active, 1 revoked",
        "imports:  none",
        "running:  1 commands, 4 queued",
        "last import: -   failed in the last hour: -",
    ]
    assert main(["forget", "--owner", "o"]) == 0
    assert capsys.readouterr().out == "revoked 2 token(s), deleted 17 rows\n"
    assert main(["revoke", "--token", "t"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["t", "revoked"]


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=10), "just now"),
        (timedelta(minutes=3), "in 3 min"),
        (-timedelta(minutes=3), "3 min ago"),
        (timedelta(hours=5), "in 5 h"),
        (-timedelta(hours=30), "30 h ago"),
        (timedelta(days=3), "in 3 d"),
    ],
)
def test_relative_time(delta: timedelta, text: str) -> None:
    assert fmt.relative_time((NOW + delta).isoformat().replace("+00:00", "Z"), NOW) == text


@given(st.integers(min_value=-400 * 86400, max_value=400 * 86400))
def test_relative_time_direction(seconds: int) -> None:
    text = fmt.relative_time((NOW + timedelta(seconds=seconds)).isoformat(), NOW)
    if abs(seconds) < 45:
        assert text == "just now"
    elif seconds > 0:
        assert text.startswith("in ")
    else:
        assert text.endswith(" ago")
    assert fmt.relative_time(None, NOW) == "-"
    assert fmt.relative_time("not a time", NOW) == "not a time"


def test_run_sandbox_with_a_postgresql_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[bool] = []

    def daemon_main(settings: Settings, *, sandbox: bool) -> int:
        started.append(sandbox)
        return 0

    monkeypatch.setitem(sys.modules, "aisd.daemon", types.SimpleNamespace(main=daemon_main))
    monkeypatch.setenv("AISD_DATABASE_URL", "postgresql://aisd@db.internal:5432/aisd")
    assert main(["run", "--sandbox"]) == 2
    err = capsys.readouterr().err
    assert "AISD_DATABASE_URL" in err
    assert "SQLite only" in err
    assert "db.internal" not in err
    assert started == []


def test_status_shows_the_daemons_sharing_a_postgresql_database() -> None:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    status = {
        "version": "0.1.0",
        "startedAt": "2026-12-01T09:00:00Z",
        "cluster": {
            "self": "host-a:11:ab",
            "leading": True,
            "leader": "host-a:11:ab",
            "leaderTerm": 3,
            "daemons": [
                {
                    "host": "host-a",
                    "pid": 11,
                    "live": True,
                    "heartbeatAgeSeconds": 0.4,
                    "slotsHeld": 5,
                    "claimer": "clm_a",
                },
                {
                    "host": "host-b",
                    "pid": 22,
                    "live": False,
                    "heartbeatAgeSeconds": 14.2,
                    "slotsHeld": 3,
                    "claimer": "clm_b",
                },
            ],
        },
    }
    text = fmt.render_status(status, now)
    assert "cluster:  leader host-a:11:ab (term 3)" in text
    assert "host-a pid 11: live, heartbeat 0.4 s ago, 5 slots" in text
    assert "host-b pid 22: lapsed, heartbeat 14.2 s ago, 3 slots" in text
    # One daemon on SQLite: no cluster lines.
    assert "cluster" not in fmt.render_status({**status, "cluster": None}, now)
