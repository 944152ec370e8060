"""The backup units: `systemd-analyze verify` says nothing, the service is rated safe, and the
daemon's unit turns metrics on."""

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


def _units_in(tmp_path: Path) -> tuple[Path, Path]:
    aisd = Path(sys.executable).with_name("aisd")
    service = tmp_path / "aisd-backup.service"
    text = (UNITS / "aisd-backup.service").read_text()
    assert "ExecStart=/usr/bin/aisd backup /var/lib/aisd-backups\n" in text
    service.write_text(text.replace("ExecStart=/usr/bin/aisd", f"ExecStart={aisd}"))
    timer = tmp_path / "aisd-backup.timer"
    timer.write_text((UNITS / "aisd-backup.timer").read_text())
    return service, timer


def test_verify_prints_nothing(tmp_path: Path) -> None:
    service, timer = _units_in(tmp_path)
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(service), str(timer)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout + proc.stderr == ""
    assert proc.returncode == 0


def test_backup_service_is_rated_safe(tmp_path: Path) -> None:
    service, _ = _units_in(tmp_path)
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(service)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(
        r"Overall exposure level for aisd-backup\.service: ([0-9.]+) (\w+)", proc.stdout
    )
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 1.0
    assert match.group(2) == "SAFE"


def test_the_backup_runs_as_the_daemons_user_and_the_daemon_exports_metrics() -> None:
    backup = (UNITS / "aisd-backup.service").read_text()
    assert "DynamicUser=yes\nUser=aisd\n" in backup
    # The database directory comes first: settings take $STATE_DIRECTORY's first entry.
    assert "StateDirectory=aisd aisd-backups\n" in backup
    daemon = (UNITS / "aisd.service").read_text()
    assert not re.search(r"^User=", daemon, re.MULTILINE), "its dynamic user is named aisd"
    assert "Environment=AISD_METRICS_LISTEN=127.0.0.1:9464\n" in daemon
    assert "Persistent=true" in (UNITS / "aisd-backup.timer").read_text()
