"""`aisd sandbox` as a process: it says where it listens, logs one line per call, refuses a
busy port with exit code 1, and comes back from its state file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _sandbox(port: int, tmp: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "aisd", "sandbox", "--port", str(port), "--state", "s.json"],
        cwd=tmp,
        env={**env, "AISD_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisd", "sandbox-ctl", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_aisd_sandbox_announces_itself_logs_each_call_and_refuses_a_busy_port(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = _sandbox(port, tmp_path)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.strip() == (
            f"sandbox listening on http://127.0.0.1:{port}  (X-Api-Key: sandbox-key)"
        )
        url = f"http://127.0.0.1:{port}"
        minted = subprocess.run(
            [sys.executable, "-m", "aisd", "sandbox-ctl", "--url", url, "mint", "--owner", "o"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert minted.returncode == 0, minted.stderr
        assert '"ownerExternalId": "o"' in minted.stdout
        line = server.stdout.readline()
        assert '"event": "sandbox.request"' in line
        assert '"path": "/sandbox/mint"' in line
        assert '"status": 200' in line
        shared = _ctl(url, "mint", "--owner", "p", "--accounts", "PL61109010140000071219812874")
        assert shared.returncode == 0, shared.stderr
        records = _ctl(url, "stats")
        assert records.returncode == 0, records.stderr
        assert json.loads(records.stdout) == {
            "importsBySession": {},
            "commandsCreated": 0,
            "maxRunning": 0,
            "runningCommands": 0,
            "reusesByAccount": {},
            "pollsByCommand": {},
        }
        refused = _ctl(url, "mint", "--owner", "q", "--accounts", "not-an-iban")
        assert refused.returncode == 1
        assert "valid PL IBANs" in refused.stderr
        busy = _sandbox(port, tmp_path)
        out, _ = busy.communicate(timeout=30)
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out
        assert (tmp_path / "s.json").exists()
    finally:
        server.terminate()
        server.communicate(timeout=15)
    again = _sandbox(port, tmp_path)
    try:
        assert again.stdout is not None
        assert "sandbox listening" in again.stdout.readline()
        status = subprocess.run(
            [sys.executable, "-m", "aisd", "sandbox-ctl", "--url", url, "status"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # Both minted sessions (o's and p's) came back from the state file.
        assert '"sessions": 2' in status.stdout, status.stdout + status.stderr
    finally:
        again.terminate()
        again.communicate(timeout=15)
