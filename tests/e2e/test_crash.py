"""Crashes and stops of the daemon process: nothing lost, nothing stuck, nothing done twice."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from aisd.sandbox import MintedConsent
from tests.e2e.conftest import (
    DaemonProcess,
    SandboxServer,
    all_events,
    assert_gap_free,
    served_facts,
    stored_facts,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

LOST_IMPORT = "DefaultImportLost"
FINAL_EVENTS = ("import.succeeded", "import.failed")


def _submit(daemon: DaemonProcess, consent: MintedConsent) -> str:
    ids = daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )
    import_id: str = ids["importId"]
    return import_id


def _assert_data_is_what_was_served(
    daemon: DaemonProcess, sandbox_server: SandboxServer, consents: dict[str, MintedConsent]
) -> None:
    """Each owner's merged data is exactly its one served import: nothing twice, nothing lost."""
    served = {s.session_id: s for s in sandbox_server.stats().served}
    for consent in consents.values():
        data = daemon.client.owner_data(consent.owner_external_id)
        by_iban = {a["iban"]: a for a in data["accounts"]}
        result = served.get(consent.session_id)
        if result is None:
            assert not any(a["transactions"] for a in data["accounts"])
            continue
        assert set(by_iban) == {a.iban for a in result.result.accounts}
        for account in result.result.accounts:
            assert Counter(stored_facts(by_iban[account.iban])) == Counter(served_facts(account))


def test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    seed = random.randrange(2**32)
    print(f"crash campaign seed: {seed}")
    rng = random.Random(seed)
    sandbox_server.configure(command_seconds=2.0)
    daemon.start(AISD_MAX_RUNNING_COMMANDS="8")
    consents: dict[str, MintedConsent] = {}
    running_at_kill = []
    for crash in range(4):
        for n in range(3):
            consent = sandbox_server.mint(f"crash-{crash}-{n}")
            consents[_submit(daemon, consent)] = consent
        time.sleep(rng.uniform(0.5, 3.0))
        running_at_kill.append(daemon.client.status()["runningCommands"])
        daemon.restart()  # SIGKILL, then the same database again

    views = wait_final(daemon.client, list(consents), timeout=60)

    # The campaign hit the daemon while it had commands running upstream.
    assert sum(running_at_kill) > 0, (seed, running_at_kill)

    outcomes = Counter(
        v["state"] if v["state"] == "successful" else v["error"]["name"] for v in views
    )
    assert set(outcomes) <= {"successful", LOST_IMPORT}, (seed, outcomes, views)
    assert outcomes["successful"] >= 1, (seed, outcomes)
    print(f"running at each kill: {running_at_kill}; outcomes: {dict(outcomes)}")
    stats = sandbox_server.stats()
    served_sessions = [s.session_id for s in stats.served]
    assert len(served_sessions) == len(set(served_sessions)), seed
    assert stats.commands_created <= len(consents), seed
    assert stats.max_running <= 8
    for view in views:
        session_id = consents[view["importId"]].session_id
        assert (view["state"] == "successful") == (session_id in served_sessions), seed
    _assert_data_is_what_was_served(daemon, sandbox_server, consents)

    events = all_events(daemon.client)
    assert_gap_free(events)
    per_import: Counter[tuple[str, str]] = Counter(
        (e["importId"], e["type"]) for e in events if e["importId"] is not None
    )
    for import_id in consents:
        assert per_import[(import_id, "consent.received")] == 1
        assert sum(per_import[(import_id, t)] for t in FINAL_EVENTS) == 1, seed
    status = daemon.client.status()
    assert status["runningCommands"] == 0
    assert sum(status["imports"].values()) == len(consents)
    # No restart sent more commands than the budget: upstream never refused one, and the
    # budget was never lowered.
    assert _jobs_quota_refusals(daemon) == 0, seed
    assert status["slotLimit"] == 8


def _jobs_quota_refusals(daemon: DaemonProcess) -> int:
    return sum(1 for ln in daemon.log_lines() if ln["event"] == "upstream.jobs_quota_exceeded")


def test_a_restart_with_every_slot_in_flight_starts_nothing_more_and_drains_at_full_speed(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    # Commands outlast the kill, so the restarted daemon finds 8 in flight and 8 queued.
    sandbox_server.configure(command_seconds=4.0)
    daemon.start(
        AISD_MAX_RUNNING_COMMANDS="8", AISD_POLL_MIN_SECONDS="2", AISD_POLL_MAX_SECONDS="2"
    )
    consents = {}
    for n in range(16):
        consent = sandbox_server.mint(f"full-{n}")
        consents[_submit(daemon, consent)] = consent
    # Killed once 8 commands are recorded as running: every slot is in flight, nothing is
    # between a Default Import and its recorded reply, and 8 consents wait in the queue.
    wait_for(
        lambda: (
            sum(daemon.client.get_import(i)["commandId"] is not None for i in consents) >= 8 or None
        ),
        timeout=15,
        what="8 commands running",
    )
    daemon.restart()
    # At 8 at a time the backlog takes two rounds of 4 s; one at a time would take 16 rounds.
    views = wait_final(daemon.client, list(consents), timeout=30)
    assert [v["state"] for v in views] == ["successful"] * len(consents), views
    stats = sandbox_server.stats()
    assert stats.max_running <= 8
    assert stats.commands_created == len(consents)
    assert stats.imports_by_session == {c.session_id: 1 for c in consents.values()}
    assert _jobs_quota_refusals(daemon) == 0
    assert daemon.client.status()["slotLimit"] == 8


def _all_started(daemon: DaemonProcess, import_ids: list[str]) -> list[dict[str, Any]] | None:
    views = [daemon.client.get_import(i) for i in import_ids]
    return views if all(v["commandId"] is not None for v in views) else None


def test_sigterm_while_importing_exits_cleanly_and_resumes_without_repeats(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    # Slow replies keep Default Imports in flight when the first SIGTERM lands.
    sandbox_server.configure(command_seconds=4.0, latency_seconds=0.5)
    daemon.start()
    consents = {}
    for n in range(4):
        consent = sandbox_server.mint(f"stop-{n}")
        consents[_submit(daemon, consent)] = consent
    time.sleep(0.2)
    assert daemon.terminate() < 10
    # The Default Imports in flight at the signal were answered and recorded before the exit.
    assert sandbox_server.stats().commands_created == len(consents)

    daemon.start()
    wait_for(lambda: _all_started(daemon, list(consents)), timeout=15, what="commands started")
    assert daemon.terminate() < 10

    daemon.start()
    views = wait_final(daemon.client, list(consents), timeout=30)
    assert [v["state"] for v in views] == ["successful"] * len(consents), views
    stats = sandbox_server.stats()
    assert stats.imports_by_session == {c.session_id: 1 for c in consents.values()}
    assert stats.commands_created == len(consents)
    _assert_data_is_what_was_served(daemon, sandbox_server, consents)
    assert_gap_free(all_events(daemon.client))
    stops = [ln["event"] for ln in daemon.log_lines() if ln["event"].startswith("daemon.")]
    assert stops.count("daemon.stopping") == 2
    assert stops.count("daemon.stopped") == 2


def test_a_default_import_whose_reply_died_with_the_daemon_fails_as_lost(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    # The sandbox starts the commands but withholds its replies until after the kill.
    sandbox_server.configure(rate_timeout=1.0, timeout_fault_seconds=3.0)
    daemon.start()
    consents = {}
    for n in range(2):
        consent = sandbox_server.mint(f"lost-{n}")
        consents[_submit(daemon, consent)] = consent
    wait_for(
        lambda: sandbox_server.stats().commands_created == len(consents) or None,
        timeout=10,
        what="the Default Imports to reach the sandbox",
    )
    daemon.kill()
    sandbox_server.configure(rate_timeout=0.0)
    daemon.start()

    views = wait_final(daemon.client, list(consents), timeout=20)

    assert [v["state"] for v in views] == ["failed"] * len(consents)
    assert [v["error"]["name"] for v in views] == [LOST_IMPORT] * len(consents)
    stats = sandbox_server.stats()
    # One accepted Default Import per session, one refused attempt to learn its fate, no more.
    assert stats.commands_created == len(consents)
    assert stats.imports_by_session == {c.session_id: 2 for c in consents.values()}
    assert stats.served == []
    events = all_events(daemon.client)
    assert_gap_free(events)
    failed = [e for e in events if e["type"] == "import.failed"]
    assert sorted(e["importId"] for e in failed) == sorted(consents)
