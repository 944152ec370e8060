"""Backups end to end: ``aisd backup`` beside a daemon under load, ``aisd restore`` into a
stopped one, which then starts and holds every consent accepted before the backup began."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aisd.client import DaemonUnavailable
from tests.e2e.conftest import DaemonProcess, SandboxServer, wait_final, wait_for

pytestmark = pytest.mark.slow


def _aisd(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisd", *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class Intake:
    """Submits consents from a thread until stopped; remembers each accepted one in order."""

    def __init__(self, daemon: DaemonProcess, sandbox_server: SandboxServer) -> None:
        self.accepted: list[tuple[str, str, str]] = []  # (owner, importId, tokenId)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._daemon = daemon
        self._sandbox = sandbox_server
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            consent = self._sandbox.mint(f"load-{n}")
            try:
                ids = self._daemon.client.submit_consent(
                    consent.owner_external_id,
                    consent.session_id,
                    consent.signature,
                    multiple_access_id=consent.multiple_access_id,
                )
            except DaemonUnavailable:
                return
            with self.lock:
                self.accepted.append((consent.owner_external_id, ids["importId"], ids["tokenId"]))
            n += 1

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return list(self.accepted)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_under_load_restores_every_consent_accepted_before_it(
    daemon: DaemonProcess, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    daemon.start()
    intake = Intake(daemon, sandbox_server)
    intake.start()
    wait_for(lambda: len(intake.snapshot()) >= 10 or None, timeout=30, what="consents")
    wait_for(
        lambda: daemon.client.status()["runningCommands"] > 0 or None,
        timeout=30,
        what="imports running",
    )
    before_backup = intake.snapshot()
    backups = tmp_path / "backups"
    backups.mkdir()
    made = _aisd(daemon, "backup", "--json", str(backups))
    assert made.returncode == 0, made.stderr
    wait_for(lambda: len(intake.snapshot()) > len(before_backup) + 3 or None, timeout=30)
    intake.stop()
    (backup,) = backups.iterdir()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert '"integrity": "ok"' in made.stdout

    # A restore needs the daemon stopped.
    refused = _aisd(daemon, "restore", str(backup))
    assert refused.returncode == 1
    assert "stop it first" in refused.stderr
    daemon.terminate()

    db = Path(daemon.env["AISD_DB_PATH"])
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    before = _digest(db)
    bad = _aisd(daemon, "restore", str(truncated))
    assert bad.returncode == 1
    assert "restore refused, nothing was replaced" in bad.stderr
    assert "corrupt or truncated" in bad.stderr
    assert _digest(db) == before

    restored = _aisd(daemon, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert "previous database kept at" in restored.stdout

    daemon.start()
    for owner, import_id, token_id in before_backup:
        view = daemon.client.get_import(import_id)
        assert view["ownerExternalId"] == owner
        assert view["tokenId"] == token_id
    tokens = {t["tokenId"] for t in daemon.client.list_tokens()["tokens"]}
    assert {token for _, _, token in before_backup} <= tokens
    # Imports that were queued or running at the backup resume from what it recorded: each
    # ends (a session the old daemon used after the backup is refused upstream), none is stuck.
    wait_final(daemon.client, [i for _, i, _ in before_backup], timeout=90)
    assert daemon.terminate() < 10
