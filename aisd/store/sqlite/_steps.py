"""The pipeline's transactions in the SQLite store, each one plain function run on the
database thread in one crossing (see :mod:`aisd.store.sqlite._sync`).

Claims, fenced steps, slot rows, the budget and the quota section. Phases come from the pure
step table :mod:`aisd.phases`; events come built with the writes (:mod:`aisd.events`). SQLite
has one writer, so ``BEGIN IMMEDIATE`` is the quota section's lock; a backend with concurrent
writers locks the accounts the token reaches instead.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime

from aisd.kontomatik._models import CommandFailure, Session
from aisd.merge import coverages
from aisd.phases import (
    IN_FLIGHT,
    Budget,
    ImportPhase,
    Step,
    allowed_from,
    lowered,
    raised,
    state_of,
    target,
)
from aisd.planner import pseudo_account, reach
from aisd.store._records import (
    AccessKind,
    AccessStart,
    Claim,
    ImportJob,
    ImportKind,
    LedgerEntry,
    MergeStats,
    NewEvent,
    QuotaAnswer,
    QuotaView,
    StepAfter,
    StepWrite,
    TickOutcome,
    TickPlanner,
    TokenRecord,
)
from aisd.store._requests import Fail, Lease, LeaseEnd, LeaseRenew, LeaseWrite, Succeed
from aisd.store.sqlite._codec import dt_in, dt_out, json_in, opt_dt_out
from aisd.store.sqlite._data_codec import owners_json
from aisd.store.sqlite._data_merge import merge
from aisd.store.sqlite._errors import LeaseLost, NotFoundError
from aisd.store.sqlite._ids import new_id
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._sync import emit, returning_id, rows
from aisd.store.sqlite._tokens import token_record, token_records

__all__ = [
    "begin_access",
    "budget_of",
    "claim_work",
    "end_access",
    "end_then_begin_access",
    "fail_claimed",
    "fail_import",
    "finish_success",
    "job_of",
    "lease",
    "let_go_all",
    "merge",
    "quota_view",
    "record_access",
    "record_step",
]

_CHANGE_SEQ = "change_seq"
_IN_FLIGHT = json_in(sorted(p.value for p in IN_FLIGHT))


@functools.cache
def _from(step: Step) -> str:
    # Asked by every fenced write: the step table is fixed, so each step's list is built once.
    return json_in(sorted(p.value for p in allowed_from(step)))


def _fence(claim: Claim, step: Step) -> dict[str, object]:
    return {
        "id": claim.import_id,
        "claimer": claim.claimer,
        "epoch": claim.epoch,
        "from": _from(step),
    }


def _lost(db: sqlite3.Connection, claim: Claim, step: Step) -> LeaseLost | NotFoundError:
    found = rows(db, "import_row", {"id": claim.import_id})
    if not found:
        return NotFoundError(f"import {claim.import_id} not found")
    if found[0]["phase"] == ImportPhase.DONE.value:
        return LeaseLost(f"import {claim.import_id} already ended ({found[0]['state']})")
    return LeaseLost(f"import {claim.import_id}: {step.value} under a lost claim or phase")


def _changed(db: sqlite3.Connection, cursor: sqlite3.Cursor, claim: Claim, step: Step) -> None:
    if cursor.rowcount != 1:
        raise _lost(db, claim, step)


def _ended(step: Step, *, succeeded: bool) -> dict[str, str]:
    # A final step leads to the same phase from every phase it may start from.
    to = target(step, next(iter(allowed_from(step))))
    return {"to": to.value, "state": state_of(to, succeeded=succeeded)}


def job_of(row: sqlite3.Row) -> ImportJob:
    """A ``claimed_jobs`` row as an :class:`ImportJob` with its claim."""
    session = None
    if row["session_id"] is not None:
        session = Session(session_id=row["session_id"], signature=row["signature"])
    claim = None
    if row["claimed_by"] is not None:
        claim = Claim(row["id"], row["claimed_by"], row["claim_epoch"])
    return ImportJob(
        import_id=row["id"],
        kind=ImportKind(row["kind"]),
        phase=ImportPhase(row["phase"]),
        owner_external_id=row["owner_external_id"] or "",
        token_id=row["token_id"],
        since=date.fromisoformat(row["since"]),
        created_at=dt_out(row["created_at"]),
        session=session,
        command_id=row["command_id"],
        polls=row["polls"],
        default_import_attempts=row["default_import_attempts"],
        attempts=row["attempts"],
        not_before=opt_dt_out(row["not_before"]),
        started_at=opt_dt_out(row["started_at"]),
        last_poll_at=opt_dt_out(row["last_poll_at"]),
        multiple_access_id=row["multiple_access_id"],
        claim=claim,
    )


def budget_of(db: sqlite3.Connection) -> tuple[Budget, int]:
    """The shared budget and the slots held now."""
    row = rows(db, "budget")[0]
    ceiling = row["ceiling"]
    limit = ceiling if row["lowered_to"] is None else min(ceiling, row["lowered_to"])
    return Budget(limit, ceiling, row["strikes"]), row["held"]


def claim_work(db: sqlite3.Connection, *, claimer: str, now: datetime) -> list[ImportJob]:
    """Adopt in-flight imports nobody live drives, then claim queued ones into free slots."""
    ts = dt_in(now)
    for row in rows(db, "release_gone_queued", {"now": ts, "claimer": claimer}):
        db.execute(Q["free_slot"], {"id": row["id"]})
    params = {"claimer": claimer, "now": ts, "in_flight": _IN_FLIGHT}
    awaiting = {row["id"] for row in rows(db, "lapsed_starting", params)}
    claimed = [row["id"] for row in rows(db, "adopt_in_flight", params)]
    budget, held = budget_of(db)
    free = budget.limit - held
    if free > 0:
        for row in rows(db, "claimable_queued", {"now": ts, "limit": free}):
            taken = db.execute(Q["take_slot"], {"id": row["id"], "now": ts, "limit": budget.limit})
            if taken.rowcount != 1:
                break
            rows(db, "claim_import", {"id": row["id"], "claimer": claimer})
            claimed.append(row["id"])
    db.execute(Q["forget_lapsed_claimers"], {"now": ts})
    if not claimed:
        return []
    jobs = [job_of(row) for row in rows(db, "claimed_jobs", {"ids": json_in(claimed)})]
    return [replace(job, reply_may_arrive=job.import_id in awaiting) for job in jobs]


def account_ledger(
    db: sqlite3.Connection, tokens: Sequence[TokenRecord], *, since: datetime
) -> tuple[list[LedgerEntry], dict[str, frozenset[str]]]:
    """The Reuse accesses since ``since`` that count against the accounts ``tokens`` reach
    (ascending in time), read by account from ``reuse_by_account``, and the IBANs each of
    their tokens was found under. For the tokens asked the planner takes their own accounts;
    for any other it needs only those it shares with one asked, which is what is found."""
    asked = sorted({a for t in tokens for a in reach(t.token_id, t.accounts)})
    found = rows(
        db, "reuse_ledger_of_accounts", {"accounts": json_in(asked), "since": dt_in(since)}
    )
    ledger: list[LedgerEntry] = []
    seen: set[int] = set()
    accounts: dict[str, set[str]] = {}
    pseudo = pseudo_account("")
    # By position: a name lookup in a row compares it with every column name.
    for access_id, token_id, account, sent_at in found:
        if not account.startswith(pseudo):
            accounts.setdefault(token_id, set()).add(account)
        if access_id not in seen:  # an access reaching two asked accounts is found twice
            seen.add(access_id)
            ledger.append(LedgerEntry(token_id, dt_out(sent_at)))
    ledger.sort(key=lambda entry: (entry.at, entry.token_id))
    return ledger, {token_id: frozenset(ibans) for token_id, ibans in accounts.items()}


def quota_view(
    db: sqlite3.Connection, token_id: str, *, now: datetime, since: datetime
) -> QuotaView:
    """What the quota rule needs about one token, read inside the caller's transaction."""
    params = {"token_ids": json_in([token_id]), "owner_external_id": None, "state": None}
    found = rows(db, "token_records_by_ids", params)
    token = token_record(found[0]) if found else None
    ledger, accounts_of = account_ledger(db, [token] if token else [], since=since)
    return QuotaView(token, tuple(ledger), accounts_of, now)


def _fenced_row(db: sqlite3.Connection, claim: Claim, step: Step) -> sqlite3.Row:
    found = rows(db, "fenced_import", _fence(claim, step))
    if not found:
        raise _lost(db, claim, step)
    return found[0]


def record_access(
    db: sqlite3.Connection, kind: AccessKind, *, now: datetime, token_id: str | None
) -> int:
    """A ledger row for an access outside imports (a Revoke), before it is sent."""
    ts = dt_in(now)
    params = {
        "kind": kind.value,
        "token_id": token_id,
        "import_id": None,
        "session_id": None,
        "now": ts,
    }
    access_id = returning_id(db, "insert_access", params)
    if kind == AccessKind.REUSE and token_id is not None:
        db.execute(Q["token_reused"], {"id": token_id, "now": ts})
    return access_id


def begin_access(
    db: sqlite3.Connection,
    claim: Claim,
    kind: AccessKind,
    *,
    now: datetime,
    token_id: str | None,
    session_id: str | None,
    answer: QuotaAnswer | None,
    event: NewEvent | None,
) -> int:
    """Record a Reuse or Default Import of a claimed import before it is sent (and move the
    import by the step table, appending ``event``); returns the ledger row's id."""
    step = Step.REUSE_SENT if kind == AccessKind.REUSE else Step.IMPORT_SENT
    imp = _fenced_row(db, claim, step)
    at = answer.at if answer is not None else now
    ts = dt_in(at)
    access_id = returning_id(
        db,
        "insert_access",
        {
            "kind": kind.value,
            "token_id": token_id,
            "import_id": claim.import_id,
            "session_id": session_id,
            "now": ts,
        },
    )
    to = target(step, ImportPhase(imp["phase"]))
    params = {**_fence(claim, step), "to": to.value, "state": state_of(to), "now": ts}
    if step == Step.REUSE_SENT:
        _changed(db, db.execute(Q["step_reuse_sent"], params), claim, step)
        if token_id is not None:
            db.execute(Q["token_reused"], {"id": token_id, "now": ts})
    else:
        _changed(db, db.execute(Q["step_import_sent"], params), claim, step)
    if event is not None:
        emit(db, [event], now)
    return access_id


def end_access(
    db: sqlite3.Connection,
    access_id: int,
    *,
    outcome: str,
    error_name: str | None,
    pressure: str | None,
    step: StepAfter | None = None,
) -> Budget:
    """Set a ledger row's outcome and, with ``pressure`` (``lower`` after JobsQuotaExceeded,
    ``raise`` after an accepted Default Import), move the shared budget by its rule; with
    ``step``, record that fenced step first (its lost fence raises before anything is set)."""
    if step is not None:
        assert step.write.step != Step.ENDED_UPSTREAM, "a step that claims returns its jobs"
        record_step(db, step.claim, step.write, now=step.now)
    params = {"id": access_id, "outcome": outcome, "error_name": error_name}
    if db.execute(Q["set_access_outcome"], params).rowcount != 1:
        raise NotFoundError(f"access {access_id} not found")
    if outcome == "not_sent":
        db.execute(Q["token_reuse_not_sent"], {"id": access_id})
    budget, held = budget_of(db)
    if pressure is None:
        return budget
    after = lowered(budget, held) if pressure == "lower" else raised(budget)
    if after != budget:
        lowered_to = None if after.limit >= after.ceiling else after.limit
        db.execute(Q["set_budget"], {"lowered_to": lowered_to, "strikes": after.strikes})
    return after


def end_then_begin_access(
    db: sqlite3.Connection, access_id: int, *, step: StepAfter, then: AccessStart
) -> tuple[Budget, int]:
    """:func:`end_access` (``ok``, with ``step``) and :func:`begin_access` of ``then`` under
    the same claim, in the caller's transaction."""
    budget = end_access(db, access_id, outcome="ok", error_name=None, pressure=None, step=step)
    begun = begin_access(
        db,
        step.claim,
        then.kind,
        now=then.now,
        token_id=then.token_id,
        session_id=then.session_id,
        answer=None,
        event=then.event,
    )
    return budget, begun


def record_step(
    db: sqlite3.Connection, claim: Claim, write: StepWrite, *, now: datetime
) -> list[ImportJob]:
    """A fenced step of a claimed import. The end of a command upstream passes its slot on:
    the same transaction claims the next work for the same claimer, which it returns."""
    step = write.step
    ts = dt_in(now)
    not_before = None if write.not_before is None else dt_in(write.not_before)
    params = {**_fence(claim, step), "now": ts, "not_before": not_before}
    if step == Step.SESSION:
        assert write.session is not None
        imp = _fenced_row(db, claim, step)
        session_ref = returning_id(
            db,
            "upsert_session",
            {
                "owner_id": imp["owner_id"],
                "session_id": write.session.session_id,
                "signature": write.session.signature,
                "now": ts,
            },
        )
        params |= {"session_ref": session_ref, "to": target(step, ImportPhase(imp["phase"])).value}
        _changed(db, db.execute(Q["step_session"], params), claim, step)
    elif step == Step.COMMAND:
        ordinal = None
        if write.access is not None:
            found = rows(db, "access_ordinal", {"id": claim.import_id, "access": write.access})
            ordinal = found[0]["n"]
        params |= {
            "command_id": write.command_id,
            "owner_echo": write.owner_echo,
            "to": target(step, ImportPhase.STARTING).value,
            "ordinal": ordinal,
        }
        _changed(db, db.execute(Q["step_command"], params), claim, step)
    elif step == Step.POLL:
        _changed(db, db.execute(Q["step_poll"], params), claim, step)
    elif step == Step.REQUEUE:
        to = target(step, ImportPhase.QUEUED)
        params |= {"attempts": write.attempts, "to": to.value, "state": state_of(to)}
        _changed(db, db.execute(Q["step_requeue"], params), claim, step)
        db.execute(Q["free_slot"], {"id": claim.import_id})
    elif step == Step.WAIT:
        imp = _fenced_row(db, claim, step)
        params |= {"attempts": write.attempts, "to": target(step, ImportPhase(imp["phase"])).value}
        _changed(db, db.execute(Q["step_wait"], params), claim, step)
    elif step == Step.NOT_STARTED:
        params |= {"attempts": write.attempts, "to": target(step, ImportPhase.READY).value}
        _changed(db, db.execute(Q["step_wait"], params), claim, step)
    elif step == Step.ENDED_UPSTREAM:
        _fenced_row(db, claim, step)
        db.execute(Q["free_slot"], {"id": claim.import_id})
        return claim_work(db, claimer=claim.claimer, now=now)
    elif step == Step.LET_GO:
        imp = _fenced_row(db, claim, step)
        db.execute(Q["let_go"], params)
        if imp["phase"] == ImportPhase.QUEUED.value:
            db.execute(Q["free_slot"], {"id": claim.import_id})
    else:
        raise ValueError(f"{step.value} is not recorded by record_step")
    return []


def register_claimer(
    db: sqlite3.Connection,
    claimer: str,
    *,
    now: datetime,
    lease_until: datetime,
    host: str,
    pid: int,
    sole: bool,
    max_running: int,
) -> None:
    """A new lease; with ``sole``, every other claimer's lease ends now."""
    ts = dt_in(now)
    params = {"id": claimer, "now": ts, "lease_until": dt_in(lease_until), "host": host, "pid": pid}
    db.execute(Q["register_claimer"], params)
    if sole:
        db.execute(Q["end_other_leases"], {"id": claimer})
    db.execute(Q["set_ceiling"], {"ceiling": max_running})
    db.execute(Q["ensure_slots"], {"ceiling": max_running})


def let_go_all(db: sqlite3.Connection, claimer: str, *, now: datetime) -> None:
    """A claimer stops: its queued imports free their slots, in-flight ones keep them for
    whoever claims next, and its lease ends."""
    for row in rows(db, "let_go_all", {"claimer": claimer}):
        if row["phase"] == ImportPhase.QUEUED.value:
            db.execute(Q["free_slot"], {"id": row["id"]})
    db.execute(Q["end_claimer"], {"id": claimer})


def lease(
    db: sqlite3.Connection,
    write: LeaseWrite,
    *,
    now: datetime,
    new_claimer: str,
    until: datetime | None,
    host: str,
    pid: int,
) -> Lease | bool | None:
    """Start, renew or end a lease (see :meth:`aisd.store.Store.lease`). A start takes
    ``new_claimer`` as the id; ``until`` is when a started or renewed lease runs out."""
    if isinstance(write, LeaseEnd):
        let_go_all(db, write.claimer, now=now)
        return None
    assert until is not None
    if isinstance(write, LeaseRenew):
        params = {"id": write.claimer, "now": dt_in(now), "lease_until": dt_in(until)}
        return bool(db.execute(Q["renew_claimer"], params).rowcount == 1)
    register_claimer(
        db,
        new_claimer,
        now=now,
        lease_until=until,
        host=host,
        pid=pid,
        sole=write.sole,
        max_running=write.max_running,
    )
    budget, held = budget_of(db)
    return Lease(new_claimer, budget, held)


def fail_import(
    db: sqlite3.Connection,
    import_id: str,
    failure: CommandFailure,
    *,
    now: datetime,
    polls: int | None,
    event: NewEvent,
) -> None:
    """End an open import as failed (its slot and claim with it) and append ``event``."""
    params = {
        "id": import_id,
        "now": dt_in(now),
        "polls": polls,
        "error_name": failure.name,
        "error_message": failure.message,
        **_ended(Step.FAIL, succeeded=False),
    }
    db.execute(Q["finish_import_failure"], params)
    db.execute(Q["free_slot"], {"id": import_id})
    emit(db, [event], now)


def fail_claimed(db: sqlite3.Connection, claim: Claim, write: Fail, *, now: datetime) -> None:
    """End a claimed import as the domain's :class:`Fail` says, with what it does to the
    import's token; the token's event is appended when its row changed."""
    imp = _fenced_row(db, claim, Step.FAIL)
    if write.owner_echo is not None:
        db.execute(Q["set_import_echo"], {"id": claim.import_id, "echo": write.owner_echo})
    fail_import(db, claim.import_id, write.failure, now=now, polls=write.polls, event=write.event)
    ts = dt_in(now)
    if write.refused_reply is not None:
        params = {
            "import_id": claim.import_id,
            "reason": write.failure.name,
            "reply": write.refused_reply,
            "now": ts,
        }
        db.execute(Q["insert_refused_reply"], params)
    token_id = imp["token_id"]
    if token_id is None:
        return
    if write.deferred_until is not None:
        params = {"id": token_id, "now": ts, "deferred_until": dt_in(write.deferred_until)}
        changed = db.execute(Q["token_quota_refused"], params).rowcount == 1
    elif write.reauth_required:
        ending = {"id": token_id, "state": "reauth_required", "reason": write.failure.name}
        changed = db.execute(Q["end_token"], {**ending, "now": ts}).rowcount == 1
        db.execute(Q["token_refresh_failed"], {"id": token_id, "now": ts})
    else:
        db.execute(Q["token_refresh_failed"], {"id": token_id, "now": ts})
        changed = (
            write.pause_refreshes
            and db.execute(Q["pause_token_refreshes"], {"id": token_id}).rowcount == 1
        )
    if changed and write.token_event is not None:
        emit(db, [write.token_event], now)


def finish_success(
    db: sqlite3.Connection, claim: Claim, write: Succeed, *, now: datetime
) -> MergeStats:
    """Store a claimed import's result and end it as successful, in one transaction."""
    ts = dt_in(now)
    imp = _fenced_row(db, claim, Step.SUCCEED)
    result = write.result
    persons = owners_json(result.owners)
    db.execute(
        Q["set_owner_persons"], {"id": imp["owner_id"], "persons": json_in(persons), "now": ts}
    )
    covered = coverages(result, write.coverage_start)
    stats = merge(db, imp["owner_id"], claim.import_id, result, covered, ts)
    if write.raw_reply is not None:
        db.execute(
            Q["insert_raw_reply"],
            {
                "import_id": claim.import_id,
                "coverage_start": write.coverage_start.isoformat(),
                "reply": write.raw_reply,
                "now": ts,
            },
        )
    db.execute(
        Q["finish_import_success"],
        {
            "id": claim.import_id,
            "now": ts,
            "polls": write.polls,
            **_ended(Step.SUCCEED, succeeded=True),
            "accounts": stats.accounts,
            "transactions": stats.transactions,
            "added": stats.added,
            "modified": stats.modified,
            "removed": stats.removed,
        },
    )
    db.execute(Q["free_slot"], {"id": claim.import_id})
    token_id = imp["token_id"]
    if token_id is not None:
        db.execute(Q["token_imported"], {"id": token_id, "now": ts})
        db.executemany(
            Q["insert_token_account"],
            [{"token_id": token_id, "iban": a.iban, "now": ts} for a in result.accounts],
        )
    started = dt_out(imp["started_at"] or imp["created_at"])
    emit(db, [write.event(stats, started)], now)
    return stats


def queue_refresh(
    db: sqlite3.Connection, token_id: str, *, owner_id: int, now: datetime, since: date
) -> str | None:
    """Queue a refresh of an active token unless one is open (the unique index decides);
    its ``next_refresh_at`` is cleared (re-planned when the import ends)."""
    import_id = new_id("imp_")
    params = {
        "id": import_id,
        "owner_id": owner_id,
        "token_id": token_id,
        "since": since.isoformat(),
        "now": dt_in(now),
    }
    if db.execute(Q["insert_refresh_once"], params).rowcount != 1:
        return None
    db.execute(Q["clear_next_refresh"], {"id": token_id})
    return import_id


def plan_due(
    db: sqlite3.Connection, *, now: datetime, limit: int, planner: TickPlanner
) -> TickOutcome:
    """The planner tick's quota section: the due tokens and their ledger read, the pure
    planner's decisions written (plans, queued refreshes, events), all in one transaction."""
    due = token_records(rows(db, "due_token_records", {"now": dt_in(now), "limit": limit}))
    if not due:
        return TickOutcome((), (), next_refresh_due(db))
    ledger, accounts_of = account_ledger(db, due, since=planner.horizon(now))
    refreshes: list[dict[str, str]] = []
    plans: list[dict[str, object]] = []
    events: list[NewEvent] = []
    for write in planner.decide(due, ledger, accounts_of, now):
        if write.queue_since is not None:
            refreshes.append(
                {
                    "id": new_id("imp_"),
                    "token_id": write.token_id,
                    "since": write.queue_since.isoformat(),
                }
            )
            continue
        at = None if write.at is None else dt_in(write.at)
        plans.append({"id": write.token_id, "at": at, "reason": write.reason})
        if write.event is not None:
            events.append(write.event)
    # Set-based: a tick writes hundreds of rows, so the refreshes go in as one statement that
    # also finds their owners, and their tokens' plans are cleared by one more. Due tokens are
    # active (read above, in this transaction) and have no open refresh, so every plan and
    # insert lands; the unique index still drops a second open refresh, and only inserted ones
    # are reported (in created_at, id order: they share created_at).
    db.executemany(Q["set_plan"], plans)
    queued: list[str] = []
    if refreshes:
        params = {"refreshes": json_in(refreshes), "now": dt_in(now)}
        inserted = sorted(
            (row["id"], row["token_id"]) for row in rows(db, "queue_refreshes", params)
        )
        db.execute(
            Q["clear_next_refresh_of_tokens"], {"token_ids": json_in([t for _, t in inserted])}
        )
        queued = [import_id for import_id, _ in inserted]
    emit(db, events, now)
    return TickOutcome(tuple(due), tuple(queued), next_refresh_due(db))


def next_refresh_due(db: sqlite3.Connection) -> datetime | None:
    """The earliest ``next_refresh_at`` of an active token, read in the caller's transaction."""
    found = rows(db, "next_refresh_due")
    return dt_out(found[0]["next_refresh_at"]) if found else None
