"""Two daemons on one PostgreSQL and one upstream, an ``aisd sandbox`` process of its own:
what one held when it died or froze is finished by the other, once, within the shared budget
and quota; checked from the sandbox's records (``/sandbox/stats``) and its request log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aisd.client import RpcError
from aisd.sandbox import MintedConsent
from tests.e2e.conftest import (
    API_KEY,
    DaemonProcess,
    all_events,
    assert_gap_free,
    daemon_environment,
    daemon_process,
    wait_final,
    wait_for,
)
from tests.e2e.sandbox_process import SandboxProcess, sandbox_process
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.slow

# The PostgreSQL claimers' and leader's lease (aisd.cluster.LEASE_SECONDS) and some room.
TAKEOVER_SECONDS = 6.0 + 10.0
# A valid Polish IBAN several minted owners share: their refreshes share its quota.
SHARED_IBAN = "PL61109010140000071219812874"


@dataclass
class Cluster:
    """The upstream process and the two daemons (not yet started)."""

    upstream: SandboxProcess
    a: DaemonProcess
    b: DaemonProcess


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Callable[[float], Cluster]]:
    """Start an ``aisd sandbox`` whose commands run this many seconds, and give two daemons,
    each with its own directory and socket, on one database and that upstream."""
    with ExitStack() as stack:

        def start(command_seconds: float) -> Cluster:
            upstream = stack.enter_context(
                sandbox_process(
                    tmp_path / "upstream", api_key=API_KEY, command_seconds=command_seconds
                )
            )
            a = stack.enter_context(
                daemon_process(tmp_path / "a", _env(tmp_path / "a", upstream, postgres_url))
            )
            b = stack.enter_context(
                daemon_process(tmp_path / "b", _env(tmp_path / "b", upstream, postgres_url))
            )
            return Cluster(upstream, a, b)

        yield start


def _env(directory: Path, upstream: SandboxProcess, url: str) -> dict[str, str]:
    directory.mkdir()
    env = daemon_environment(directory, upstream)
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
    upstream: SandboxProcess, consents: dict[str, MintedConsent]
) -> None:
    by_session = upstream.stats()["importsBySession"]
    assert {c.session_id: by_session.get(c.session_id) for c in consents.values()} == {
        c.session_id: 1 for c in consents.values()
    }


def _settled(daemon: DaemonProcess) -> bool | None:
    imports = daemon.client.list_imports()["imports"]
    return True if not any(i["state"] in ("queued", "running") for i in imports) else None


def test_sigkill_of_the_daemon_polling_leaves_its_commands_to_the_other(
    cluster: Callable[[float], Cluster],
) -> None:
    up = cluster(8.0)
    a, b = up.a, up.b
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(12):
        consent = up.upstream.mint(f"kill-{n}")
        consents[_submit(a if n % 2 else b, consent)] = consent
    # a drives some commands upstream: kill it in the middle of polling them.
    wait_for(lambda: _slots_of(b, a.pid) or None, timeout=20, what="a holding slots")
    held = _slots_of(b, a.pid)
    a.kill()

    views = wait_final(b.client, list(consents), timeout=90)

    assert [v["state"] for v in views] == ["successful"] * len(views)
    # a's commands were polled to their end by b, never started again.
    _assert_one_default_import_each(up.upstream, consents)
    stats = up.upstream.stats()
    assert stats["commandsCreated"] == len(consents)
    # Both daemons together never ran more commands than the one API client may.
    assert stats["maxRunning"] <= 8
    assert held > 0
    assert_gap_free(all_events(b.client))
    dead = [d for d in _cluster(b)["daemons"] if d["pid"] == a.pid]
    assert all(not d["live"] for d in dead)


def test_a_frozen_daemon_is_taken_over_and_sends_nothing_once_resumed(
    cluster: Callable[[float], Cluster],
) -> None:
    up = cluster(10.0)
    a, b = up.a, up.b
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(4):
        consent = up.upstream.mint(f"frozen-{n}")
        consents[_submit(a, consent)] = consent
    wait_for(lambda: _slots_of(a, a.pid) == 4 or None, timeout=20, what="a running all four")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        views = wait_final(b.client, list(consents), timeout=60)
        assert [v["state"] for v in views] == ["successful"] * len(views)
        _assert_one_default_import_each(up.upstream, consents)
        requests_before = len(up.upstream.requests())
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
    # The upstream's request log: not one call since b finished, from either daemon.
    assert len(up.upstream.requests()) == requests_before
    _assert_one_default_import_each(up.upstream, consents)
    assert a.alive


def test_both_daemons_racing_token_refresh_on_a_shared_account_keep_the_quota(
    cluster: Callable[[float], Cluster],
) -> None:
    up = cluster(1.0)
    a, b = up.a, up.b
    a.start(AISD_MAX_RUNNING_COMMANDS="8", AISD_REFRESHES_PER_DAY="4")
    b.start(AISD_MAX_RUNNING_COMMANDS="8", AISD_REFRESHES_PER_DAY="4")
    consents = {}
    for n in range(4):
        consent = up.upstream.mint(f"share-{n}", accounts=SHARED_IBAN)
        consents[_submit(a if n == 0 else b, consent)] = consent
    wait_final(a.client, list(consents), timeout=60)
    tokens = [t["tokenId"] for t in a.client.list_tokens()["tokens"]]
    assert len(tokens) == 4
    accepted = 0
    for _ in range(3):
        for token_id in tokens:
            for daemon in (a, b):
                try:
                    daemon.client.refresh(token_id)
                except RpcError:
                    continue
                accepted += 1
    wait_for(lambda: _settled(a), timeout=90, what="the refreshes to end")
    reuses = up.upstream.stats()["reusesByAccount"]
    # The first imports used no Reuse; the refreshes of all four tokens share one account's 4.
    assert all(len(times) <= 4 for times in reuses.values()), reuses
    assert 1 <= len(reuses.get(SHARED_IBAN, [])) <= 4, reuses
    assert accepted >= 1


def test_a_postgresql_restart_mid_run_is_waited_out(
    cluster: Callable[[float], Cluster], postgres_server: PostgresServer
) -> None:
    up = cluster(8.0)
    a, b = up.a, up.b
    a.start(AISD_MAX_RUNNING_COMMANDS="8")
    b.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents = {}
    for n in range(6):
        consent = up.upstream.mint(f"restart-{n}")
        consents[_submit(a, consent)] = consent
    wait_for(lambda: _slots_of(a, a.pid) + _slots_of(a, b.pid) or None, timeout=20)
    # Mid-poll: every command started and its id stored. (A Default Import whose reply is in
    # flight when the server goes away is stored late by its sender, claim lapsed or not:
    # tests/integration/test_late_command.py.)
    wait_for(
        lambda: all(a.client.get_import(i)["commandId"] for i in consents) or None,
        timeout=30,
        what="every command id stored",
    )
    postgres_server.stop()
    try:
        # While the server is down the socket says so: storage UNAVAILABLE, -32030.
        with pytest.raises(RpcError) as info:
            _submit(a, up.upstream.mint("restart-down"))
        assert info.value.code == -32030
    finally:
        postgres_server.start()
    views = wait_final(a.client, list(consents), timeout=90)
    assert [v["state"] for v in views] == ["successful"] * len(views)
    _assert_one_default_import_each(up.upstream, consents)
    assert up.upstream.stats()["commandsCreated"] == len(consents)
    assert a.alive
    assert b.alive
    wait_for(lambda: a.client.status()["storage"]["ok"] or None, timeout=20)


def test_the_combined_peak_of_running_commands_is_the_one_limit(
    cluster: Callable[[float], Cluster],
) -> None:
    up = cluster(3.0)
    a, b = up.a, up.b
    a.start(AISD_MAX_RUNNING_COMMANDS="4")
    b.start(AISD_MAX_RUNNING_COMMANDS="4")
    consents = {}
    for n in range(10):
        consent = up.upstream.mint(f"peak-{n}")
        consents[_submit(a if n % 2 else b, consent)] = consent
    views = wait_final(a.client, list(consents), timeout=90)
    assert [v["state"] for v in views] == ["successful"] * len(views)
    stats = up.upstream.stats()
    # The limit is the API client's, not each host's: together the two ran 4 at most, and
    # with ten waiting they did reach 4.
    assert stats["maxRunning"] == 4, stats["maxRunning"]
    _assert_one_default_import_each(up.upstream, consents)


def test_each_event_is_logged_once_by_the_daemon_that_appended_it(
    cluster: Callable[[float], Cluster], postgres_url: str
) -> None:
    up = cluster(1.0)
    a, b = up.a, up.b
    a.start()
    b.start()
    good = {_submit(a, up.upstream.mint("log-a")): "a", _submit(b, up.upstream.mint("log-b")): "b"}
    wait_final(a.client, list(good), timeout=60)
    up.upstream.faults(rate_import_error=1.0)
    failed = _submit(b, up.upstream.mint("log-failing"))
    wait_final(a.client, [failed], timeout=60)
    up.upstream.faults(rate_import_error=0.0)
    [token_a] = a.client.list_tokens(owner_external_id="log-a")["tokens"]
    [token_b] = a.client.list_tokens(owner_external_id="log-b")["tokens"]
    # A refresh; one that another company's accesses crowd out; a revocation; an erasure.
    a.client.refresh(token_a["tokenId"])
    wait_for(lambda: _settled(a), timeout=60, what="the refresh to end")
    up.upstream.faults(rate_access_limit=1.0)
    b.client.refresh(token_b["tokenId"])
    wait_for(
        lambda: any(e["type"] == "quota.deferred" for e in all_events(a.client)) or None,
        timeout=60,
        what="the refresh to be deferred",
    )
    up.upstream.faults(rate_access_limit=0.0)
    # The bank kills a's token: its next refresh finds it dead.
    up.upstream.kill("log-a")
    b.client.refresh(token_a["tokenId"])
    wait_for(
        lambda: any(e["type"] == "token.reauth_required" for e in all_events(a.client)) or None,
        timeout=60,
        what="the dead token to need a new consent",
    )
    a.client.revoke(token_id=token_b["tokenId"])
    b.client.forget("log-failing")
    wanted = {
        "token.reauth_required",
        "consent.received",
        "import.started",
        "import.succeeded",
        "import.failed",
        "quota.deferred",
        "token.revoked",
        "owner.forgotten",
    }
    with psycopg.connect(postgres_url) as conn:
        appended = conn.execute("SELECT id, type, origin FROM events ORDER BY id").fetchall()
    assert wanted <= {kind for _, kind, _ in appended}, appended

    pids = {a.pid: "a", b.pid: "b"}

    def logged() -> dict[int, list[str]] | None:
        seen: dict[int, list[str]] = {}
        for name, daemon in (("a", a), ("b", b)):
            for line in daemon.log_lines():
                if line.get("logger") == "aisd.events":
                    seen.setdefault(line["eventId"], []).append(name)
        return seen if all(event_id in seen for event_id, _, _ in appended) else None

    seen = wait_for(logged, timeout=20, what="every event's line")
    for event_id, kind, origin in appended:
        appender = pids[int(origin.split(":")[1])]
        # One line in the whole cluster, in the log of the daemon that appended the event.
        assert seen.get(event_id) == [appender], (event_id, kind, origin, seen.get(event_id))
    # Both daemons appended some: the leader did not log for the other.
    assert {pids[int(o.split(":")[1])] for _, _, o in appended} == {"a", "b"}


@dataclass(frozen=True)
class _Nowhere:
    """An upstream never reached: the daemon exits before its first call."""

    url: str = "http://127.0.0.1:9"


def test_a_daemon_whose_database_cannot_be_reached_exits_1_with_a_clean_message(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    unreachable = f"postgresql://aisd@127.0.0.1:{postgres_server.port + 1}/nowhere"
    (tmp_path / "a").mkdir()
    env = daemon_environment(tmp_path / "a", _Nowhere())
    env["AISD_DATABASE_URL"] = unreachable
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
