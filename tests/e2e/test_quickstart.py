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


REPO = Path(__file__).resolve().parents[2]


def _fresh_clone(into: Path) -> Path:
    """The checkout as a fresh clone would have it: the files git knows (committed or not, so a
    working copy is tested as it stands), in a new repository, without .venv or var/."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    clone = into / "aisd"
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            target = clone / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(clone)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "clone"], check=True)
    return clone


class MakeRun:
    """`make run` in a checkout, its output in a file, stopped as Ctrl-C would stop it."""

    def __init__(self, clone: Path, env: dict[str, str], number: int) -> None:
        self.output = clone.parent / f"make-run-{number}.log"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "run"],
                cwd=clone,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while "aisd is ready" not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.5)
        return self.text()

    def stop(self) -> None:
        """Ctrl-C: make dies of the SIGINT, the daemon drains and stops cleanly."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=30)
        assert code in (0, -signal.SIGINT, 130), self.text()
        deadline = time.monotonic() + 30
        while "daemon.stopped" not in self.text():
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.2)


def _wait_successful(env: dict[str, str], import_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        view: dict[str, Any] = cli_json(env, "imports", import_id)
        if view["state"] in ("successful", "failed"):
            assert view["state"] == "successful", view
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.5)


def _ibans(env: dict[str, str], owner: str) -> set[str]:
    data = cli_json(env, "data", "--owner", owner)
    assert data["ownerExternalId"] == owner
    return {account["iban"] for account in data["accounts"]}


# About 55 s alone (two `make run` starts from a fresh clone); the default 120 s hang guard
# fired once under load 5+, so it gets a wider one.
@pytest.mark.timeout(300)
def test_the_quick_start_from_a_fresh_clone_survives_a_restart_of_make_run(
    tmp_path: Path,
) -> None:
    clone = _fresh_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
    for name in ("NOTIFY_SOCKET", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    client_env = {**env, "AISD_SOCKET_PATH": str(clone / "var" / "aisd.sock")}

    def aisd(*args: str) -> Any:
        done = subprocess.run(
            [str(clone / ".venv" / "bin" / "aisd"), args[0], "--json", *args[1:]],
            cwd=clone,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = MakeRun(clone, env, 1)
    try:
        banner = first.wait_ready(timeout=300)
        assert "its socket is var/aisd.sock" in banner
        assert "export AISD_SOCKET_PATH=var/aisd.sock" in banner
        assert ".venv/bin/aisd submit --demo --owner alice" in banner
        # Lean: the runtime dependencies only, no test tools.
        listed = subprocess.run(
            [str(clone / ".venv" / "bin" / "python"), "-m", "pip", "list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.lower()
        assert "uvicorn" in listed
        assert not {"pytest", "mypy", "ruff", "hypothesis"} & set(listed.split())
        alice = aisd("submit", "--demo", "--owner", "alice")
        _wait_successful(client_env, alice["importId"])
        alice_ibans = _ibans(client_env, "alice")
    finally:
        first.stop()

    second = MakeRun(clone, env, 2)
    try:
        second.wait_ready(timeout=60)
        # A third `make run` beside it is told so, and never announces the other as its own.
        third = MakeRun(clone, env, 3)
        assert third.process.wait(timeout=60) != 0
        assert "an aisd daemon already answers on var/aisd.sock: stop it first" in third.text()
        assert "aisd is ready" not in third.text()
        bob = aisd("submit", "--demo", "--owner", "bob")
        assert bob["importId"] != alice["importId"]
        assert bob["tokenId"] != alice["tokenId"]
        view = _wait_successful(client_env, bob["importId"])
        assert view["ownerExternalId"] == "bob"
        bob_ibans = _ibans(client_env, "bob")
        assert bob_ibans
        assert not bob_ibans & alice_ibans
        assert _ibans(client_env, "alice") == alice_ibans
        # The sandbox came back with alice's token: a refresh of it reaches her accounts.
        refreshed = aisd("refresh", "--token", alice["tokenId"])
        _wait_successful(client_env, refreshed["importId"])
        assert _ibans(client_env, "alice") == alice_ibans
        assert aisd("sandbox-ctl", "status")["sessions"] == 3
    finally:
        second.stop()
    untracked = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout
    assert untracked == "", untracked
