"""The events and lifecycle rules of :mod:`aisd.events`: what every backend records is built
here, so these are the payloads the feed and webhooks carry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd import events
from aisd.events import anonymous_event_data, ended_refresh_failure, warning_schedule
from aisd.kontomatik._models import CommandFailure, ImportResult
from aisd.phases import ImportPhase
from aisd.store import ConsentIn, ImportJob, ImportKind, MergeStats, TokenRecord, TokenState

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
FAR = T0 + timedelta(days=180)
GONE_IBANS = ("PL61109010140000071219812874", "PL10105000997603123456789123")
JOB = ImportJob(
    import_id="imp_1",
    kind=ImportKind.REFRESH,
    phase=ImportPhase.POLLING,
    owner_external_id="owner-1",
    token_id="tok_1",
    since=date(2026, 4, 1),
    created_at=T0,
    polls=3,
    started_at=T0 + timedelta(seconds=10),
)
TOKEN = TokenRecord(
    token_id="tok_1",
    owner_external_id="owner-1",
    state=TokenState.ACTIVE,
    created_at=T0,
    expires_at=FAR,
    accounts=frozenset(),
    last_import_at=None,
    last_refresh_at=None,
    next_refresh_at=None,
    plan_reason=None,
    failures=0,
    upstream_deferred_until=None,
    refresh_until=None,
    max_imports=None,
    imports_done=0,
    warned_days=(),
)
FAILURE = CommandFailure("BankDown", "The bank does not answer.")


def test_import_events_carry_their_import() -> None:
    started = events.import_started(JOB)
    assert (started.type, started.data) == ("import.started", {"kind": "refresh"})
    failed = events.import_failed(
        owner_external_id="owner-1", token_id="tok_1", import_id="imp_1", failure=FAILURE, polls=2
    )
    assert (failed.owner_external_id, failed.token_id, failed.import_id) == (
        "owner-1",
        "tok_1",
        "imp_1",
    )
    assert failed.data == {"errorName": "BankDown", "errorMessage": FAILURE.message, "polls": 2}


def test_success_event_counts_the_merge_and_times_from_the_recorded_start() -> None:
    build = events.import_succeeded(JOB, ImportResult(), polls=4, now=T0 + timedelta(seconds=70))
    stats = MergeStats(accounts=1, transactions=9, added=5, modified=1, removed=2)
    event = build(stats, T0 + timedelta(seconds=10))
    assert event.type == "import.succeeded"
    assert event.data == {
        "accounts": 1,
        "transactions": 9,
        "added": 5,
        "modified": 1,
        "removed": 2,
        "polls": 4,
        "durationSeconds": 60.0,
        "creditCards": 0,
        "partialAccounts": [],
        "skipped": 0,
    }


def test_a_failure_write_defaults_to_the_jobs_polls() -> None:
    write = events.failed(JOB, FAILURE)
    assert (write.polls, write.event.data["polls"]) == (3, 3)
    assert (write.reauth_required, write.pause_refreshes, write.deferred_until) == (
        False,
        False,
        None,
    )
    assert events.failed(JOB, FAILURE, 7).event.data["polls"] == 7


def test_a_refused_reply_is_kept_and_pauses_the_token() -> None:
    write = events.refused(JOB, FAILURE, b"gz", polls=1, owner_echo="kontomatik-1")
    assert (write.refused_reply, write.owner_echo, write.pause_refreshes) == (
        b"gz",
        "kontomatik-1",
        True,
    )
    assert write.token_event is not None
    assert (write.token_event.type, write.token_event.data) == (
        "token.refresh_paused",
        {"reason": "BankDown"},
    )
    assert events.owner_mismatch_failure().name == events.OWNER_MISMATCH


def test_token_events() -> None:
    until = T0 + timedelta(hours=3)
    assert events.quota_deferred(JOB, until).data == {
        "reason": "upstream_limit",
        "nextPossibleAt": "2026-05-01T11:00:00Z",
    }
    assert events.token_reauth_required(JOB, "InvalidMultipleAccessId").data == {
        "errorName": "InvalidMultipleAccessId"
    }
    assert events.token_expired(TOKEN).data == {"expiresAt": "2026-10-28T08:00:00Z"}
    assert events.token_expiring(TOKEN, 7).data == {
        "daysBefore": 7,
        "expiresAt": "2026-10-28T08:00:00Z",
    }
    revoked = events.token_ended(TOKEN, TokenState.REVOKED, "owner.forget")
    assert (revoked.type, revoked.data) == ("token.revoked", {"reason": "owner.forget"})
    with pytest.raises(ValueError, match="final state"):
        events.token_ended(TOKEN, TokenState.ACTIVE, "nope")


def test_consent_received_keeps_its_time_format() -> None:
    consent = ConsentIn("owner-1", "sess-1", "sig", "maid", target="KontoBank")
    event = events.consent_received(consent, date(2026, 1, 1), "tok_1", "imp_1", FAR)
    assert event.data == {
        "target": "KontoBank",
        "since": "2026-01-01",
        "multipleAccess": True,
        "expiresAt": "2026-10-28T08:00:00.000000Z",
    }
    single = events.consent_received(
        ConsentIn("owner-1", "sess-2", "sig"), date(2026, 1, 1), None, "imp_2", FAR
    )
    assert "expiresAt" not in single.data


def test_owner_forgotten_has_no_personal_data() -> None:
    event = events.owner_forgotten(rows_deleted=12, token_ids=["tok_1"], events_stripped=3)
    assert (event.type, event.owner_external_id) == ("owner.forgotten", None)
    assert event.data == {"rowsDeleted": 12, "tokenIds": ["tok_1"], "eventsStripped": 3}


@given(
    st.sets(st.integers(min_value=1, max_value=60), max_size=6),
    st.sets(st.integers(min_value=1, max_value=60), max_size=6),
    st.integers(min_value=-100 * 24 * 60, max_value=100 * 24 * 60),
)
def test_warning_schedule_rule(days: set[int], warned: set[int], offset: int) -> None:
    now = FAR + timedelta(minutes=offset)
    due, next_at = warning_schedule(FAR, days, warned, now)
    pending = days - warned
    assert due == sorted((d for d in pending if FAR - timedelta(days=d) <= now), reverse=True)
    if pending:
        assert next_at == FAR - timedelta(days=max(pending))
        # Nothing due means the next threshold lies ahead: a candidate is never pushed back.
        assert bool(due) == (next_at <= now)
    else:
        assert next_at is None


def test_ended_refresh_failure_names() -> None:
    assert [ended_refresh_failure(s).name for s in TokenState if s != TokenState.ACTIVE] == [
        "TokenReauthRequired",
        "TokenRevoked",
        "TokenExpired",
    ]


def test_anonymous_event_data_keeps_counts_and_words_only() -> None:
    data = {
        "accounts": 2,
        "added": 5,
        "multipleAccess": True,
        "kind": "refresh",
        "errorName": "InvalidMultipleAccessId",
        "errorMessage": "Konto Maria Sochacka zablokowane",
        "target": "KontoBank",
        "accounts_list": [GONE_IBANS[0]],
        "reason": "PL61109010140000071219812874",
        "since": "2025-01-31",
    }
    assert anonymous_event_data(data) == {
        "accounts": 2,
        "added": 5,
        "multipleAccess": True,
        "kind": "refresh",
        "errorName": "InvalidMultipleAccessId",
    }
