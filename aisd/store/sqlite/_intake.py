"""Group commit of ``consent.submit``: concurrent submits share one transaction and one fsync.

Concurrent submits are coalesced (:mod:`aisd.store._coalesce`) into one batch, written with one
``INSERT ... SELECT`` per table over the batch's rows as JSON under a savepoint, or one savepoint
per consent when one fails, so that a bad consent fails alone. The batch is one write of the
store's writer, which commits it with the other writes waiting then: nobody is answered before
the batch holding their consent is durable (``synchronous=FULL``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any

from aisd import events as built
from aisd.store._coalesce import Coalescer
from aisd.store._records import ConsentIn, ImportKind, NewEvent, StoredConsent, SubmitOutcome
from aisd.store.sqlite._codec import date_in, dt_in
from aisd.store.sqlite._ids import new_id
from aisd.store.sqlite._queries import QUERIES as Q
from aisd.store.sqlite._sync import emit, emit_each, returning_id, rows

__all__ = ["GroupCommit", "submit_one"]

# A batch bigger than this waits for the next commit: one transaction stays short.
MAX_BATCH = 512


@dataclass(slots=True)
class _Pending:
    consent: ConsentIn
    now: datetime
    since: date
    expires_at: datetime
    outcome: SubmitOutcome | None = None
    error: BaseException | None = None
    events: list[NewEvent] = field(default_factory=list)


def _repeat(row: sqlite3.Row) -> SubmitOutcome:
    """The outcome of a submit whose ``sessionId`` is stored already (a ``consent_by_session``
    row): the first submit's ids, and what it stored for the caller to compare."""
    stored = StoredConsent(
        owner_external_id=row["owner_external_id"],
        session_signature=row["session_signature"],
        multiple_access_id=row["multiple_access_id"],
        token_id=row["token_id"],
    )
    return SubmitOutcome(row["import_id"], row["token_id"], created=False, stored=stored)


def submit_one(
    db: sqlite3.Connection, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
) -> tuple[SubmitOutcome, list[NewEvent]]:
    """Store one consent inside the caller's transaction; returns what it did and the events
    to append (none for an idempotent repeat)."""
    existing = rows(db, "consent_by_session", {"session_id": consent.session_id})
    if existing:
        return _repeat(existing[0]), []
    ts = dt_in(now)
    owner_id = returning_id(
        db, "upsert_owner", {"external_id": consent.owner_external_id, "now": ts}
    )
    refresh_until = date_in(consent.refresh_until)
    consent_id = returning_id(
        db,
        "insert_consent_once",
        {
            "owner_id": owner_id,
            "session_id": consent.session_id,
            "target": consent.target,
            "refresh_until": refresh_until,
            "max_imports": consent.max_imports,
            "now": ts,
        },
    )
    session_ref = returning_id(
        db,
        "upsert_session",
        {
            "owner_id": owner_id,
            "session_id": consent.session_id,
            "signature": consent.session_signature,
            "now": ts,
        },
    )
    token_id = None
    if consent.multiple_access_id is not None:
        token_id = new_id("tok_")
        db.execute(
            Q["insert_token"],
            {
                "id": token_id,
                "owner_id": owner_id,
                "consent_id": consent_id,
                "multiple_access_id": consent.multiple_access_id,
                "now": ts,
                "expires_at": dt_in(expires_at),
                "refresh_until": refresh_until,
                "max_imports": consent.max_imports,
            },
        )
    import_id = new_id("imp_")
    db.execute(
        Q["insert_import"],
        {
            "id": import_id,
            "owner_id": owner_id,
            "token_id": token_id,
            "consent_id": consent_id,
            "session_ref": session_ref,
            "kind": ImportKind.INITIAL.value,
            "since": since.isoformat(),
            "now": ts,
        },
    )
    event = built.consent_received(consent, since, token_id, import_id, expires_at)
    return SubmitOutcome(import_id, token_id, created=True), [event]


def _ids(db: sqlite3.Connection, name: str, param: str, keys: list[str]) -> dict[str, int]:
    """Key to id, from a named query over the JSON array ``keys``."""
    return {row[0]: row[1] for row in db.execute(Q[name], {param: json.dumps(keys)})}


class _NotInJson(ValueError):
    """A value of the batch that JSON text cannot carry into SQLite whole."""


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """``rows`` as the JSON array a batch statement reads with ``json_each``.

    Raises:
        _NotInJson: a string holds a NUL, which SQLite's JSON functions cut the string at;
            the batch is then written one consent at a time, each value bound as it is.
    """
    # ensure_ascii=False: a string Python cannot encode as UTF-8 fails here as it would when
    # bound, instead of reaching SQLite as an escape that decodes to something else.
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:
        raise _NotInJson("a NUL in a batch value")
    return text


def _inserted(db: sqlite3.Connection, name: str, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Run the batch statement ``name`` over ``rows``; its ``RETURNING key, id`` as a dict."""
    return {row[0]: row[1] for row in db.execute(Q[name], {"rows": _rows_json(rows)}).fetchall()}


def _submit_together(
    batch: list[_Pending], db: sqlite3.Connection
) -> list[tuple[NewEvent, datetime]]:
    """The rows of a batch whose ``sessionId``s are distinct, one ``INSERT ... SELECT`` per
    table for the whole batch instead of a statement per consent and table: the same rows, in
    the same order, as :func:`submit_one` for each in turn. Raises (and the caller writes the
    batch one at a time) when a consent is stored under a sessionId but not found by it as a
    repeat, or when a value cannot travel in the batch's JSON."""
    sessions = [item.consent.session_id for item in batch]
    found = {
        row["session_id"]: row
        for row in db.execute(Q["consents_by_sessions"], {"session_ids": json.dumps(sessions)})
    }
    new: list[_Pending] = []
    for item in batch:
        row = found.get(item.consent.session_id)
        if row is None:
            new.append(item)
        else:
            item.outcome = _repeat(row)
    if not new:
        return []
    stamps = {id(item): dt_in(item.now) for item in new}
    # Each owner once, with the time of its first consent in the batch (as submit_one's
    # first insert would store it; later ones leave the row as it is).
    first: dict[str, str] = {}
    for item in new:
        first.setdefault(item.consent.owner_external_id, stamps[id(item)])
    db.execute(
        Q["insert_owners_missing"],
        {"rows": _rows_json([{"external_id": o, "now": t} for o, t in first.items()])},
    )
    owners = _ids(db, "owner_ids", "external_ids", list(first))
    consents = _inserted(
        db,
        "insert_consents_new",
        [
            {
                "owner_id": owners[i.consent.owner_external_id],
                "session_id": i.consent.session_id,
                "target": i.consent.target,
                "refresh_until": date_in(i.consent.refresh_until),
                "max_imports": i.consent.max_imports,
                "now": stamps[id(i)],
            }
            for i in new
        ],
    )
    session_refs = _inserted(
        db,
        "upsert_sessions",
        [
            {
                "owner_id": owners[i.consent.owner_external_id],
                "session_id": i.consent.session_id,
                "signature": i.consent.session_signature,
                "now": stamps[id(i)],
            }
            for i in new
        ],
    )
    tokens: list[dict[str, Any]] = []
    imports: list[dict[str, Any]] = []
    events: list[tuple[NewEvent, datetime]] = []
    for item in new:
        consent = item.consent
        owner_id = owners[consent.owner_external_id]
        consent_id = consents[consent.session_id]
        now = stamps[id(item)]
        token_id = None
        if consent.multiple_access_id is not None:
            token_id = new_id("tok_")
            tokens.append(
                {
                    "id": token_id,
                    "owner_id": owner_id,
                    "consent_id": consent_id,
                    "multiple_access_id": consent.multiple_access_id,
                    "now": now,
                    "expires_at": dt_in(item.expires_at),
                    "refresh_until": date_in(consent.refresh_until),
                    "max_imports": consent.max_imports,
                }
            )
        import_id = new_id("imp_")
        imports.append(
            {
                "id": import_id,
                "owner_id": owner_id,
                "token_id": token_id,
                "consent_id": consent_id,
                "session_ref": session_refs[consent.session_id],
                "kind": ImportKind.INITIAL.value,
                "since": item.since.isoformat(),
                "now": now,
            }
        )
        item.outcome = SubmitOutcome(import_id, token_id, created=True)
        events.append(
            (
                built.consent_received(consent, item.since, token_id, import_id, item.expires_at),
                item.now,
            )
        )
    if tokens:
        db.execute(Q["insert_tokens"], {"rows": _rows_json(tokens)})
    db.execute(Q["insert_imports"], {"rows": _rows_json(imports)})
    return events


def _write_batch(
    batch: list[_Pending],
    db: sqlite3.Connection,
    *,
    lock: Callable[[sqlite3.Connection, list[str]], None] | None = None,
) -> None:
    """The whole batch under one savepoint, its events appended together; when a consent
    fails, the batch is rolled back to the savepoint and written again one savepoint per
    consent, so that only the bad one fails. ``lock`` first holds the batch's sessionIds
    until commit where other writers may store them meanwhile (PostgreSQL: other hosts)."""
    for item in batch:
        # A backend may run the whole transaction again (a lost race): each run starts clean.
        item.outcome, item.error = None, None
    if lock is not None:
        lock(db, sorted({item.consent.session_id for item in batch}))
    db.execute(Q["savepoint_batch"])
    try:
        appended: list[tuple[NewEvent, datetime]] = []
        if len({item.consent.session_id for item in batch}) == len(batch):
            appended = _submit_together(batch, db)
        else:
            # A sessionId twice in one batch: its second submit must see the first's rows.
            for item in batch:
                item.outcome, events = submit_one(
                    db, item.consent, now=item.now, since=item.since, expires_at=item.expires_at
                )
                appended += [(event, item.now) for event in events]
        emit_each(db, appended)
    except Exception:
        db.execute(Q["rollback_to_batch"])
        db.execute(Q["release_batch"])
        _write_one_by_one(batch, db)
        return
    db.execute(Q["release_batch"])


def _write_one_by_one(batch: list[_Pending], db: sqlite3.Connection) -> None:
    for item in batch:
        db.execute(Q["savepoint_batch"])
        try:
            item.outcome, events = submit_one(
                db, item.consent, now=item.now, since=item.since, expires_at=item.expires_at
            )
            emit(db, events, item.now)
        except Exception as exc:
            db.execute(Q["rollback_to_batch"])
            item.outcome, item.error = None, exc
        db.execute(Q["release_batch"])


class GroupCommit:
    """Coalesces concurrent submits into shared transactions (see the module docstring)."""

    def __init__(
        self,
        run: Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]],
        *,
        lock: Callable[[sqlite3.Connection, list[str]], None] | None = None,
    ) -> None:
        self._run = run
        self._lock = lock
        self._batches = Coalescer(self._write, max_batch=MAX_BATCH)

    async def _write(self, batch: list[_Pending]) -> None:
        await self._run(partial(_write_batch, batch, lock=self._lock))

    async def submit(
        self, consent: ConsentIn, *, now: datetime, since: date, expires_at: datetime
    ) -> SubmitOutcome:
        """Store ``consent`` (see :meth:`aisd.store.Store.submit_consent`) in the next batch."""
        item = _Pending(consent, now, since, expires_at)
        await self._batches.join(item)
        if item.error is not None:
            raise item.error
        assert item.outcome is not None
        return item.outcome
