"""The shipped units: `systemd-analyze verify` says nothing, and the security rating stays OK."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
MAX_EXPOSURE = 2.0


def _units_in(tmp_path: Path) -> tuple[Path, Path]:
    # verify checks that ExecStart= exists: point it at this checkout's console script, changing
    # nothing else in the unit.
    aisd = Path(sys.executable).with_name("aisd")
    assert aisd.exists(), "the package is installed in the test environment"
    service = tmp_path / "aisd.service"
    text = (UNITS / "aisd.service").read_text()
    assert "ExecStart=/usr/bin/aisd run\n" in text
    service.write_text(text.replace("ExecStart=/usr/bin/aisd", f"ExecStart={aisd}"))
    socket = tmp_path / "aisd.socket"
    socket.write_text((UNITS / "aisd.socket").read_text())
    return service, socket


def test_verify_prints_nothing(tmp_path: Path) -> None:
    service, socket = _units_in(tmp_path)
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(service), str(socket)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on parse warnings: any output at all is a regression.
    assert proc.stdout + proc.stderr == ""
    assert proc.returncode == 0


def test_security_rating_is_ok(tmp_path: Path) -> None:
    service, _ = _units_in(tmp_path)
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(service)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for aisd\.service: ([0-9.]+) (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert match.group(2) == "OK"


def test_service_keeps_the_settings_the_daemon_needs() -> None:
    text = (UNITS / "aisd.service").read_text()
    assert "Type=notify" in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "StateDirectory=aisd" in text
    assert "LoadCredential=aisd_api_key:" in text
    assert "EnvironmentFile=-/etc/aisd/aisd.env" in text
    # PrivateUsers= would turn every peer into uid 65534 and break SO_PEERCRED checks.
    assert not re.search(r"^PrivateUsers=yes", text, re.M)
    assert not re.search(r"^RuntimeDirectory=", text, re.M)
    socket = (UNITS / "aisd.socket").read_text()
    assert "ListenStream=/run/aisd/aisd.sock" in socket
    assert "SocketMode=0660" in socket
