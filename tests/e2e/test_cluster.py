"""Two daemons on one PostgreSQL and one upstream: what one held when it died or froze is
finished by the other, once, within the shared budget and quota; checked from the sandbox's
records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aisd.client import RpcError
from aisd.sandbox import MintedConsent
from tests.e2e.conftest import (
    DaemonProcess,
    SandboxServer,
    all_events,
    assert_gap_free,
    daemon_environment,
    daemon_process,
    wait_final,
    wait_for,
)
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

# The PostgreSQL claimers' and leader's lease (aisd.cluster.LEASE_SECONDS) and some room.
TAKEOVER_SECONDS = 6.0 + 10.0


@pytest.fixture
def pair(
    tmp_path: Path, sandbox_server: SandboxServer, postgres_url: str
) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    """Two daemons, each with its own directory and socket, on one database and upstream."""
    env_a = _env(tmp_path / "a", sandbox_server, postgres_url)
    env_b = _env(tmp_path / "b", sandbox_server, postgres_url)
    with daemon_process(tmp_path / "a", env_a) as a, daemon_process(tmp_path / "b", env_b) as b:
        yield a, b


def _env(directory: Path, sandbox_server: SandboxServer, url: str) -> dict[str, str]:
    directory.mkdir()
    env = daemon_environment(directory, sandbox_server)
    env["AISD_DATABASE_URL"] = url
    return env


def _submit(daemon: DaemonProcess, consent: MintedConsent) -> str:
    ids = daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )
    import_id: str = ids["importId"]
    return import_id


def _cluster(daemon: DaemonProcess) -> dict[str, Any]:
    cluster: dict[str, Any] = daemon.client.status()["cluster"]
    return cluster


def _slots_of(daemon: DaemonProcess, pid: int) -> int:
    cluster = _cluster(daemon)
    return sum(d["slotsHeld"] for d in cluster.get("daemons", []) if d["pid"] == pid and d["live"])


def _assert_one_default_import_each(
    sandbox_server: SandboxServer, consents: dict[str, MintedConsent]
) -> None:
    by_session = sandbox_server.stats().imports_by_session
    assert {c.session_id: by_session.get(c.session_id) for c in consents.values()} == {
        c.session_id: 1 for c in consents.values()
    }


def test_sigkill_of_the_daemon_polling_leaves_its_commands_to_the_other(
    pair: tuple[DaemonProcess, DaemonProcess], sandbox_server: SandboxServer
) -> None:
    a, b = pair
    sandbox_server.configure(command_seconds=8.0)
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(12):
        consent = sandbox_server.mint(f"kill-{n}")
        consents[_submit(a if n % 2 else b, consent)] = consent
    # a drives some commands upstream: kill it in the middle of polling them.
    wait_for(lambda: _slots_of(b, a.pid) or None, timeout=20, what="a holding slots")
    held = _slots_of(b, a.pid)
    a.kill()

    views = wait_final(b.client, list(consents), timeout=90)

    assert [v["state"] for v in views] == ["successful"] * len(views)
    # a's commands were polled to their end by b, never started again.
    _assert_one_default_import_each(sandbox_server, consents)
    # Both daemons together never ran more commands than the one API client may.
    assert sandbox_server.stats().max_running <= 8
    assert held > 0
    assert_gap_free(all_events(b.client))
    dead = [d for d in _cluster(b)["daemons"] if d["pid"] == a.pid]
    assert all(not d["live"] for d in dead)


def test_a_frozen_daemon_is_taken_over_and_sends_nothing_once_resumed(
    pair: tuple[DaemonProcess, DaemonProcess], sandbox_server: SandboxServer
) -> None:
    a, b = pair
    sandbox_server.configure(command_seconds=10.0)
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(4):
        consent = sandbox_server.mint(f"frozen-{n}")
        consents[_submit(a, consent)] = consent
    wait_for(lambda: _slots_of(a, a.pid) == 4 or None, timeout=20, what="a running all four")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        views = wait_final(b.client, list(consents), timeout=60)
        assert [v["state"] for v in views] == ["successful"] * len(views)
        _assert_one_default_import_each(sandbox_server, consents)
        requests_before = _request_count(sandbox_server)
        frozen_at = time.monotonic()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # Resumed, a finds its lease gone: it polls nothing of what it lost, imports nothing again.
    wait_for(
        lambda: any(line.get("event") == "pipeline.lease_lost" for line in a.log_lines()) or None,
        timeout=20,
        what="a noticing its lost lease",
    )
    assert time.monotonic() - frozen_at < 60
    assert _request_count(sandbox_server) == requests_before
    _assert_one_default_import_each(sandbox_server, consents)
    assert a.alive


def _request_count(sandbox_server: SandboxServer) -> int:
    stats = sandbox_server.stats()
    return sum(len(polls) for polls in stats.polls_by_command.values()) + sum(
        stats.imports_by_session.values()
    )


def test_both_daemons_racing_token_refresh_on_a_shared_account_keep_the_quota(
    pair: tuple[DaemonProcess, DaemonProcess], sandbox_server: SandboxServer
) -> None:
    a, b = pair
    a.start(AISD_MAX_RUNNING_COMMANDS="8", AISD_REFRESHES_PER_DAY="4")
    b.start(AISD_MAX_RUNNING_COMMANDS="8", AISD_REFRESHES_PER_DAY="4")
    first = sandbox_server.mint("share-0", accounts=1)
    shared = first.ibans
    consents = {_submit(a, first): first}
    for n in range(1, 4):
        consent = sandbox_server.mint(f"share-{n}", accounts=list(shared))
        consents[_submit(b, consent)] = consent
    wait_final(a.client, list(consents), timeout=60)
    tokens = [t["tokenId"] for t in a.client.list_tokens()["tokens"]]
    accepted = 0
    for _ in range(3):
        for token_id in tokens:
            for daemon in (a, b):
                try:
                    daemon.client.refresh(token_id)
                except RpcError:
                    continue
                accepted += 1
    wait_for(
        lambda: (
            not any(i["state"] in ("queued", "running") for i in a.client.list_imports()["imports"])
            or None
        ),
        timeout=90,
        what="the refreshes to end",
    )
    reuses = sandbox_server.stats().reuses_by_account
    # The first imports used no Reuse; the refreshes of all four tokens share one account's 4.
    assert all(len(times) <= 4 for times in reuses.values()), reuses
    assert accepted >= 1


def test_a_postgresql_restart_mid_run_is_waited_out(
    pair: tuple[DaemonProcess, DaemonProcess],
    sandbox_server: SandboxServer,
    postgres_server: PostgresServer,
) -> None:
    a, b = pair
    sandbox_server.configure(command_seconds=3.0)
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(6):
        consent = sandbox_server.mint(f"restart-{n}")
        consents[_submit(a, consent)] = consent
    wait_for(lambda: _slots_of(a, a.pid) + _slots_of(a, b.pid) or None, timeout=20)
    postgres_server.stop()
    try:
        # While the server is down the socket says so: storage UNAVAILABLE, -32030.
        with pytest.raises(RpcError) as info:
            _submit(a, sandbox_server.mint("restart-down"))
        assert info.value.code == -32030
    finally:
        postgres_server.start()
    views = wait_final(a.client, list(consents), timeout=90)
    assert [v["state"] for v in views] == ["successful"] * len(views)
    _assert_one_default_import_each(sandbox_server, consents)
    assert a.alive
    assert b.alive
    wait_for(lambda: a.client.status()["storage"]["ok"] or None, timeout=20)


def test_a_daemon_whose_database_cannot_be_reached_exits_1_with_a_clean_message(
    tmp_path: Path, sandbox_server: SandboxServer, postgres_server: PostgresServer
) -> None:
    unreachable = f"postgresql://aisd@127.0.0.1:{postgres_server.port + 1}/nowhere"
    env = _env(tmp_path / "a", sandbox_server, unreachable)
    env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "aisd_database_password").write_text("db-SECRET-password")
    out = subprocess.run(
        [sys.executable, "-m", "aisd", "run"],
        env=env,
        cwd=tmp_path / "a",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "daemon.failed" in out.stdout
    assert "PostgreSQL unavailable" in out.stdout
    assert "Traceback" not in out.stderr
    assert "db-SECRET-password" not in out.stdout + out.stderr
