"""The README's quick start, as a person runs it: `aisd run --sandbox` in one terminal, the CLI in
another: a demo consent, its import, the data as CSV, the token, the status, then a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_quick_start_works_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
    env.pop("NOTIFY_SOCKET", None)
    env.update(
        AISD_DB_PATH=str(tmp_path / "var" / "aisd.db"),
        AISD_SOCKET_PATH=str(tmp_path / "var" / "aisd.sock"),
        AISD_LOG_FORMAT="console",
    )
    (tmp_path / "var").mkdir()
    with (tmp_path / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aisd", "run", "--sandbox"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while cli(env, "status").returncode != 0:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the daemon did not answer"
            time.sleep(0.2)

        submitted = cli_json(env, "submit", "--demo", "--owner", "alice")
        assert submitted["tokenId"].startswith("tok_")
        deadline = time.monotonic() + 40
        while True:
            view = cli_json(env, "imports", submitted["importId"])
            if view["state"] in ("successful", "failed"):
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
        assert view["state"] == "successful"
        assert view["transactions"] > 100

        csv = cli(env, "data", "--owner", "alice", "--format", "csv")
        assert csv.returncode == 0, csv.stderr
        lines = csv.stdout.splitlines()
        assert lines[0].startswith("iban,currency,transactionOn")
        assert len(lines) == view["transactions"] + 1

        tokens = cli(env, "tokens", "--explain")
        assert tokens.returncode == 0
        assert submitted["tokenId"] in tokens.stdout
        assert "USED" in tokens.stdout  # the quota per account, explained
        status = cli(env, "status")
        assert "1 active" in status.stdout
        assert "1 successful" in status.stdout
        events = [e["type"] for e in cli_json(env, "events")["events"]]
        assert events == ["consent.received", "import.started", "import.succeeded"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
    assert code == 0
    log_text = (tmp_path / "daemon.log").read_text()
    assert "import.succeeded" in log_text
    assert "daemon.stopped" in log_text
