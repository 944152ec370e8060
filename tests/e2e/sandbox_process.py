"""`aisd sandbox` as a process of its own: the one upstream several daemons share in the
cluster tests, reached over real HTTP, its records read back through its control endpoints
(``/sandbox/stats``, as ``aisd sandbox-ctl --url URL stats`` prints them) and its request log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisd.sandbox import CONTROL_PATHS, MintedConsent

__all__ = ["SandboxProcess", "sandbox_process"]

START_DEADLINE_SECONDS = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SandboxProcess:
    """``python -m aisd sandbox`` on 127.0.0.1, its state file and log in ``directory``.

    Args:
        directory: where its state file and its log (stdout) go.
        api_key: the only ``X-Api-Key`` it accepts.
        command_seconds: how long each Default Import runs.
    """

    def __init__(self, directory: Path, *, api_key: str, command_seconds: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log_path = directory / "sandbox.log"
        self.port = _free_port()
        self._key = api_key
        self._command_seconds = command_seconds
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL the daemons are given as ``AISD_API_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and return once it says it listens."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
        env.update(AISD_API_KEY=self._key, AISD_LOG_FORMAT="json")
        command = [
            sys.executable,
            "-m",
            "aisd",
            "sandbox",
            "--port",
            str(self.port),
            "--state",
            str(self.directory / "state.json"),
            "--command-seconds",
            str(self._command_seconds),
        ]
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                command,
                cwd=self.directory,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while b"sandbox listening on" not in self.log_path.read_bytes():
            if self._proc.poll() is not None:
                pytest.fail(f"aisd sandbox exited with {self._proc.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"aisd sandbox did not listen within {START_DEADLINE_SECONDS} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def _control(self, action: str, form: dict[str, str] | None = None) -> Any:
        url = self.url + CONTROL_PATHS[action]
        headers = {"X-Api-Key": self._key}
        if form is None:
            reply = httpx.get(url, headers=headers, timeout=15)
        else:
            reply = httpx.post(url, data=form, headers=headers, timeout=15)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def mint(self, owner_external_id: str, *, accounts: str | None = None) -> MintedConsent:
        """A fresh consent with a token (``accounts``: a count or comma-separated IBANs)."""
        form = {"ownerExternalId": owner_external_id, "multipleAccess": "true"}
        if accounts is not None:
            form["accounts"] = accounts
        body = self._control("mint", form)
        return MintedConsent(
            owner_external_id=body["ownerExternalId"],
            session_id=body["sessionId"],
            signature=body["sessionIdSignature"],
            multiple_access_id=body["multipleAccessId"],
            ibans=(),
            target=body["target"],
        )

    def faults(self, **rates: float) -> None:
        """Set fault knobs (``rate_import_error=1.0``, ...)."""
        self._control("faults", {name: str(value) for name, value in rates.items()})

    def kill(self, owner_external_id: str) -> None:
        """The bank revoked the owner's tokens: their refreshes get InvalidMultipleAccessId."""
        self._control("kill", {"ownerExternalId": owner_external_id})

    def stats(self) -> dict[str, Any]:
        """Its records: ``importsBySession``, ``reusesByAccount``, ``pollsByCommand``,
        ``maxRunning``, ``commandsCreated``, ``runningCommands``."""
        stats: dict[str, Any] = self._control("stats")
        return stats

    def requests(self) -> list[dict[str, Any]]:
        """Its request log: one ``sandbox.request`` line per call of Kontomatik's API (the
        test controls left out)."""
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if not raw.startswith("{"):
                continue
            line = json.loads(raw)
            if line.get("event") == "sandbox.request" and not line["path"].startswith("/sandbox/"):
                lines.append(line)
        return lines


@contextmanager
def sandbox_process(
    directory: Path, *, api_key: str, command_seconds: float
) -> Iterator[SandboxProcess]:
    """A started :class:`SandboxProcess`, stopped on exit."""
    process = SandboxProcess(directory, api_key=api_key, command_seconds=command_seconds)
    try:
        process.start()
        yield process
    finally:
        process.stop()
