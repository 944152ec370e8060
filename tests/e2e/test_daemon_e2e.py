"""The daemon end to end: consent in, data out, over the real socket and real HTTP."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from aisd.sandbox import MintedConsent, ServedImport
from aisd.sandbox._data import day_entries, make_iban
from tests.e2e.conftest import (
    API_KEY,
    POLL_MAX_SECONDS,
    POLL_MIN_SECONDS,
    DaemonProcess,
    SandboxServer,
    TxFacts,
    all_events,
    assert_gap_free,
    served_facts,
    stored_facts,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

# Scheduling jitter allowed on top of the poll bounds (two processes, two event loops).
POLL_SLACK_SECONDS = 0.3
# Wall clocks of two processes read the same system clock; this only absorbs rounding.
CLOCK_EPSILON_SECONDS = 0.05


def _submit(daemon: DaemonProcess, consent: MintedConsent) -> dict[str, Any]:
    return daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
        target=consent.target,
    )


def _parse_time(text: str) -> datetime:
    assert text.endswith("Z"), f"not a UTC time: {text}"
    return datetime.fromisoformat(text)


def _served_for(sandbox_server: SandboxServer, session_id: str) -> ServedImport:
    [served] = [s for s in sandbox_server.stats().served if s.session_id == session_id]
    return served


def test_submit_imports_exactly_what_the_sandbox_served(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    daemon.start()
    consent = sandbox_server.mint("alice")
    ids = _submit(daemon, consent)
    assert ids["tokenId"] is not None
    assert ids["tokenId"] != consent.multiple_access_id

    [view] = wait_final(daemon.client, [ids["importId"]], timeout=20)

    assert view["state"] == "successful", view
    stats = sandbox_server.stats()
    served = stats.served[-1]
    assert served.session_id == consent.session_id
    assert view["importId"] == ids["importId"]
    assert view["ownerExternalId"] == "alice"
    assert view["tokenId"] == ids["tokenId"]
    assert view["kind"] == "initial"
    assert view["commandId"] == served.command_id
    assert view["error"] is None
    assert view["polls"] == len(stats.polls_by_command[served.command_id])
    assert view["accounts"] == len(served.result.accounts)
    assert view["transactions"] == served.result.transaction_count
    created = _parse_time(view["createdAt"])
    started = _parse_time(view["startedAt"])
    finished = _parse_time(view["finishedAt"])
    assert created <= started <= finished
    # Finished no earlier than the command did upstream.
    assert finished >= served.as_of - timedelta(seconds=CLOCK_EPSILON_SECONDS)

    data = daemon.client.owner_data("alice")
    assert data["ownerExternalId"] == "alice"
    assert [o["name"] for o in data["owners"]] == [o.name for o in served.result.owners]
    by_iban = {a["iban"]: a for a in data["accounts"]}
    assert set(by_iban) == {a.iban for a in served.result.accounts}
    for account in served.result.accounts:
        stored = by_iban[account.iban]
        assert stored["currencyName"] == account.currency_name
        assert stored["currencyBalance"] == str(account.balance)
        assert len(stored["transactions"]) == len(account.transactions)
        assert Counter(stored_facts(stored)) == Counter(served_facts(account))

    events = all_events(daemon.client)
    assert_gap_free(events)
    mine = [e for e in events if e["importId"] == ids["importId"]]
    assert [e["type"] for e in mine] == ["consent.received", "import.started", "import.succeeded"]
    assert all(e["ownerExternalId"] == "alice" and e["tokenId"] == ids["tokenId"] for e in mine)

    # The event log follows the feed within a couple of seconds: one JSON line per event.
    def logged() -> dict[int, dict[str, Any]] | None:
        lines = {ln["eventId"]: ln for ln in daemon.log_lines() if "eventId" in ln}
        return lines if all(e["id"] in lines for e in events) else None

    lines = wait_for(logged, timeout=10, what="the events' log lines")
    for event in events:
        line = lines[event["id"]]
        assert line["event"] == event["type"]
        assert line["importId"] == event["importId"]
        assert line["ownerExternalId"] == event["ownerExternalId"]
        assert line["level"] == "info"
        _parse_time(line["timestamp"])
    log_text = daemon.log_path.read_text() + daemon.stderr()
    assert consent.multiple_access_id is not None
    for secret in (consent.signature, consent.multiple_access_id, API_KEY):
        assert secret not in log_text


def test_polls_are_spaced_within_the_configured_bounds(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    command_seconds = 7.0
    sandbox_server.configure(command_seconds=command_seconds)
    daemon.start()
    ids = _submit(daemon, sandbox_server.mint("bob"))

    [view] = wait_final(daemon.client, [ids["importId"]], timeout=25)

    assert view["state"] == "successful", view
    stats = sandbox_server.stats()
    served = stats.served[-1]
    polls = stats.polls_by_command[served.command_id]
    default_import_at = served.as_of - timedelta(seconds=command_seconds)
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in zip([default_import_at, *polls], polls, strict=False)
    ]
    assert len(polls) >= 3, gaps
    assert view["polls"] == len(polls)
    for gap in gaps:
        assert (
            POLL_MIN_SECONDS - CLOCK_EPSILON_SECONDS <= gap <= POLL_MAX_SECONDS + POLL_SLACK_SECONDS
        )
    # The last poll is the first one to see the command finished.
    assert polls[-2] < served.as_of <= polls[-1]


def test_a_repeated_submit_returns_the_same_ids_and_starts_nothing(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    daemon.start()
    consent = sandbox_server.mint("carol")
    first = _submit(daemon, consent)
    while_running = _submit(daemon, consent)
    wait_final(daemon.client, [first["importId"]], timeout=20)
    after_success = _submit(daemon, consent)

    assert while_running == first
    assert after_success == first
    stats = sandbox_server.stats()
    assert stats.imports_by_session == {consent.session_id: 1}
    assert stats.commands_created == 1
    assert len(daemon.client.list_imports(owner_external_id="carol")["imports"]) == 1
    assert len(daemon.client.list_tokens(owner_external_id="carol")["tokens"]) == 1
    received = [e for e in all_events(daemon.client) if e["type"] == "consent.received"]
    assert len(received) == 1


def _iban_with_pending_ghost(now: datetime, seed: int) -> str:
    """An account that shows, for the next few minutes, a pending entry that will never book."""
    later = now + timedelta(minutes=5)
    for index in range(5000):
        iban = make_iban(seed, "e2e-ghost", index)
        for back in range(3):
            for entry in day_entries(seed, iban, now.date() - timedelta(days=back)):
                if entry.ghost and entry.visible_at(now) and entry.visible_at(later):
                    return iban
    raise AssertionError("no account with a visible ghost entry")


def _pending_keys(facts: list[TxFacts]) -> Counter[tuple[str, Any, str]]:
    return Counter(
        (day, amount, title) for day, _, amount, title, status in facts if status != "DONE"
    )


def test_an_overlapping_import_adds_no_duplicates_and_applies_changes(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    seed = sandbox_server.sandbox.config.seed
    ibans = [
        _iban_with_pending_ghost(datetime.now(UTC), seed),
        make_iban(seed, "dave", 0),
    ]
    daemon.start()
    first_consent = sandbox_server.mint("dave", accounts=ibans)
    first_ids = _submit(daemon, first_consent)
    [first_view] = wait_final(daemon.client, [first_ids["importId"]], timeout=20)
    assert first_view["state"] == "successful", first_view
    first = _served_for(sandbox_server, first_consent.session_id)

    # Four days on every pending entry has booked or vanished; a shorter history makes the
    # second import cover only the recent part of what the first one stored.
    sandbox_server.advance(timedelta(days=4))
    daemon.terminate()
    daemon.start(AISD_INITIAL_HISTORY_DAYS="30")
    second_consent = sandbox_server.mint("dave", accounts=ibans)
    second_ids = _submit(daemon, second_consent)
    [second_view] = wait_final(daemon.client, [second_ids["importId"]], timeout=20)
    assert second_view["state"] == "successful", second_view
    second = _served_for(sandbox_server, second_consent.session_id)
    assert second.since > first.since

    data = daemon.client.owner_data("dave")
    by_iban = {a["iban"]: a for a in data["accounts"]}
    assert set(by_iban) == set(ibans)
    booked = vanished = 0
    for old, new in zip(first.result.accounts, second.result.accounts, strict=True):
        assert old.iban == new.iban
        merged = stored_facts(by_iban[new.iban])
        older = [f for f in served_facts(old) if date.fromisoformat(f[0]) < second.since]
        assert older, "the first import must reach before the second one's coverage"
        expected = served_facts(new, second.since) + older
        assert Counter(merged) == Counter(expected)
        assert len(merged) == len(expected)

        was_pending = _pending_keys(served_facts(old))
        merged_by_key = Counter((day, amount, title) for day, _, amount, title, _ in merged)
        new_by_key = Counter((day, amount, title) for day, _, amount, title, _ in served_facts(new))
        assert not [f for f in merged if f[4] != "DONE" and (f[0], f[2], f[3]) in was_pending]
        for key, count in was_pending.items():
            assert merged_by_key[key] == new_by_key[key]
            booked += min(count, new_by_key[key])
            vanished += count - min(count, new_by_key[key])
    # The scenario really exercised both changes.
    assert booked > 0
    assert vanished > 0
