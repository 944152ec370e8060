"""Data fidelity end to end: every field the bank sent, in the right owner's place, and nothing
deleted by a short reply. The real daemon, its socket and the sandbox over HTTP."""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aisd.client import RpcError
from aisd.sandbox import MintedConsent
from tests.e2e.conftest import (
    DaemonProcess,
    SandboxServer,
    all_events,
    served_facts,
    stored_facts,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

IMPORT_TIMEOUT = 25.0


def _submit(daemon: DaemonProcess, consent: MintedConsent) -> dict[str, Any]:
    return daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )


def _imported(daemon: DaemonProcess, consent: MintedConsent) -> dict[str, Any]:
    """Submit a consent and wait for its first import to succeed; its ids."""
    ids = _submit(daemon, consent)
    [view] = wait_final(daemon.client, [ids["importId"]], timeout=IMPORT_TIMEOUT)
    assert view["state"] == "successful", view
    return ids


def _refreshed(daemon: DaemonProcess, token_id: str) -> dict[str, Any]:
    """An on-demand refresh, waited for; its ``import.get`` view."""
    import_id = daemon.client.refresh(token_id)["importId"]
    [view] = wait_final(daemon.client, [import_id], timeout=IMPORT_TIMEOUT)
    return view


def _events_of(daemon: DaemonProcess, import_id: str) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in all_events(daemon.client) if e["importId"] == import_id}


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every transaction of ``owner.data`` (accounts and cards) by its transactionId."""
    holders = [*data["accounts"], *data["creditCards"]]
    return {t["transactionId"]: t for h in holders for t in h["transactions"]}


def _db(daemon: DaemonProcess) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{daemon.env['AISD_DB_PATH']}?mode=ro", uri=True)


def test_a_partial_reply_after_a_full_one_removes_nothing_outside_its_dates(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    sandbox_server.configure(cards_per_owner=1)
    daemon.start()
    ids = _imported(daemon, sandbox_server.mint("pat", accounts=3))
    before = _rows(daemon.client.owner_data("pat"))

    # The bank times out: every account and card comes back with its last day only.
    sandbox_server.configure(partial_days=1)
    view = _refreshed(daemon, ids["tokenId"])

    assert view["state"] == "successful", view
    served = sandbox_server.stats().served[-1]
    holders = served.result.containers
    assert all(h.partial_due_to_timeout for h in holders)
    oldest = min(t.transaction_on for h in holders for t in h.transactions)
    assert oldest > date.fromisoformat(view["since"]) + timedelta(days=1), "not short enough"
    after = _rows(daemon.client.owner_data("pat"))
    # Every row older than what the partial reply returned is still there, unchanged.
    kept = {i: t for i, t in before.items() if date.fromisoformat(t["transactionOn"]) < oldest}
    assert kept, "the first import stored nothing before the partial window"
    assert {i: after.get(i) for i in kept} == kept
    succeeded = _events_of(daemon, view["importId"])["import.succeeded"]
    assert sorted(succeeded["data"]["partialAccounts"]) == sorted(
        [a.iban for a in served.result.accounts] + [c.key for c in served.result.credit_cards]
    )
    assert succeeded["data"]["skipped"] == 0


def test_an_owner_mismatch_stores_nothing_under_the_consents_owner(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    # The widget was given another owner's id than the one submitted.
    sandbox_server.configure(owner_echo_by_owner={"mallory": "eve"}, cards_per_owner=1)
    daemon.start()
    ids = _submit(daemon, sandbox_server.mint("mallory"))
    [view] = wait_final(daemon.client, [ids["importId"]], timeout=IMPORT_TIMEOUT)

    assert view["state"] == "failed"
    assert view["error"]["name"] == "OwnerMismatch"
    data = daemon.client.owner_data("mallory")
    assert (data["owners"], data["accounts"], data["creditCards"]) == ([], [], [])
    assert daemon.client.changes(owner_external_id="mallory")["added"] == []
    events = _events_of(daemon, ids["importId"])
    assert events["import.failed"]["data"]["errorName"] == "OwnerMismatch"
    assert events["token.refresh_paused"]["data"] == {"reason": "OwnerMismatch"}
    assert "import.succeeded" not in events
    [token] = daemon.client.list_tokens(owner_external_id="mallory")["tokens"]
    assert token["nextRefreshAt"] is None
    # The refused reply is kept, apart from the replayable ones.
    with closing(_db(daemon)) as db:
        refused = db.execute(
            "SELECT reason, reply FROM refused_replies WHERE import_id = ?", (ids["importId"],)
        ).fetchall()
        replayable = db.execute("SELECT COUNT(*) FROM raw_replies").fetchone()[0]
    [(reason, reply)] = refused
    assert reason == "OwnerMismatch"
    assert b'<command id="' in gzip.decompress(reply)
    assert replayable == 0


def test_a_widget_given_no_owner_id_imports_and_scores_by_kontomatiks_id(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    generated = "kontomatik-27452a6f-3efc-4e17-b07e-6f0dc6225b27"
    sandbox_server.configure(owner_echo_by_owner={"gina": generated}, score_unimported_owners=False)
    daemon.start(AISD_ANALYTICS="scores")
    _imported(daemon, sandbox_server.mint("gina"))

    # Kontomatik knows gina as the generated id only: asked by "gina" it has no data.
    scores = wait_for(
        lambda: daemon.client.owner_data("gina").get("analytics"),
        timeout=10,
        what="gina's scores",
    )
    assert [s["modelId"] for s in scores["scores"]] == ["common-2023-03-07"]


def test_a_command_shaped_reuse_imports(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    daemon.start()
    ids = _imported(daemon, sandbox_server.mint("rita"))
    sandbox_server.configure(reuse_shape="command")

    view = _refreshed(daemon, ids["tokenId"])

    assert view["state"] == "successful", view
    assert view["kind"] == "refresh"
    served = sandbox_server.stats().served[-1]
    assert served.session_id != sandbox_server.stats().served[0].session_id
    assert view["commandId"] == served.command_id


def test_a_garbage_reuse_spends_one_access_and_pauses_the_token(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    daemon.start()
    consent = sandbox_server.mint("gary", accounts=1)
    ids = _imported(daemon, consent)
    sandbox_server.configure(reuse_shape="garbage")

    view = _refreshed(daemon, ids["tokenId"])

    assert view["state"] == "failed"
    assert view["error"]["name"] == "UnexpectedReply"
    stats = sandbox_server.stats()
    assert [len(times) for times in stats.reuses_by_account.values()] == [1]
    events = _events_of(daemon, view["importId"])
    assert events["token.refresh_paused"]["data"] == {"reason": "UnexpectedReply"}
    [token] = daemon.client.list_tokens(owner_external_id="gary", explain=True)["tokens"]
    assert token["state"] == "active"
    assert token["nextRefreshAt"] is None
    # Paused, not retried: no refresh is queued behind it, and upstream saw one Reuse only.
    assert daemon.client.list_imports(owner_external_id="gary", state="queued")["imports"] == []
    assert [len(t) for t in sandbox_server.stats().reuses_by_account.values()] == [1]
    with closing(_db(daemon)) as db:
        (reply,) = db.execute(
            "SELECT reply FROM refused_replies WHERE import_id = ?", (view["importId"],)
        ).fetchone()
    assert b"<surprise>" in gzip.decompress(reply)


def _changes(
    daemon: DaemonProcess, cursor: str | None, *, owner: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Every change after ``cursor``, page by page: (added, removed, the next cursor)."""
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    while True:
        page = daemon.client.changes(cursor, owner_external_id=owner)
        added += page["added"]
        removed += page["removed"]
        cursor = page["cursor"]
        if not page["hasMore"]:
            return added, removed, page["cursor"]


def _cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aisd", *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cards_are_served_in_owner_data_csv_and_changes_and_vanish_with_forget(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    sandbox_server.configure(cards_per_owner=1)
    daemon.start()
    _imported(daemon, sandbox_server.mint("carla"))
    [served_card] = sandbox_server.stats().served[-1].result.credit_cards

    data = daemon.client.owner_data("carla")
    [card] = data["creditCards"]
    assert card["cardId"] == served_card.card_id
    assert (card["name"], card["number"], card["currencyName"]) == (
        served_card.name,
        served_card.number,
        served_card.currency_name,
    )
    assert Decimal(card["limit"]) == served_card.limit
    assert Decimal(card["currencyBalance"]) == served_card.balance
    assert Decimal(card["currencyFundsAvailable"]) == served_card.funds_available
    assert served_card.due_date is not None
    assert card["dueDate"] == served_card.due_date.isoformat()
    assert served_card.transactions, "the sandbox's card has no transactions"
    assert Counter(stored_facts(card)) == Counter(served_facts(served_card))
    card_ids = {t["transactionId"] for t in card["transactions"]}

    # The change feed carries the same rows under the same ids, marked as a card's.
    added, _, cursor = _changes(daemon, None, owner="carla")
    from_cards = {t["transactionId"]: t for t in added if t["source"] == "card"}
    assert set(from_cards) == card_ids
    assert {t["cardId"] for t in from_cards.values()} == {served_card.card_id}
    assert {t["transactionId"] for t in added} == set(_rows(data))

    # The CSV says which rows are a card's.
    done = _cli(daemon, "data", "--owner", "carla", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["transactionId"] for r in rows if r["source"] == "card"} == card_ids
    assert {r["cardId"] for r in rows if r["source"] == "card"} == {served_card.card_id}
    assert len(rows) == len(_rows(data))

    daemon.client.forget("carla")
    with pytest.raises(RpcError):
        daemon.client.owner_data("carla")
    _, removed, _ = _changes(daemon, cursor)
    assert card_ids <= {r["transactionId"] for r in removed}
    with closing(_db(daemon)) as db:
        assert db.execute("SELECT COUNT(*) FROM accounts").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM transactions").fetchone() == (0,)


def test_every_owner_block_with_its_personal_fields_until_forget(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    sandbox_server.configure(co_owner_rate=1.0, split_owner_blocks=True, owner_personal_fields=True)
    daemon.start()
    _imported(daemon, sandbox_server.mint("olga"))
    served = sandbox_server.stats().served[-1].result
    assert len(served.owners) == 2

    data = daemon.client.owner_data("olga")
    for account in data["accounts"]:
        assert [o["kind"] for o in account["owners"]] == ["OWNER", "CO_OWNER"]
    for stored, sent in zip(data["owners"], served.owners, strict=True):
        assert stored["name"] == sent.name
        assert stored["polishPesel"] == dict(sent.extra)["polishPesel"]
        assert {"phone", "email", "birthDate", "address"} <= set(stored)
    pesels = [str(dict(o.extra)["polishPesel"]) for o in served.owners]
    log_text = daemon.log_path.read_text() + daemon.stderr()
    assert not any(p in log_text for p in pesels)

    daemon.client.forget("olga")
    daemon.terminate()
    database = Path(daemon.env["AISD_DB_PATH"])
    for path in (database, database.with_name(database.name + "-wal")):
        if path.exists():
            content = path.read_bytes()
            assert not any(p.encode() in content for p in pesels), path


def test_replay_restores_cards_from_replies_stored_before_the_change(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    sandbox_server.configure(cards_per_owner=2)
    daemon.start()
    _imported(daemon, sandbox_server.mint("rene"))
    served = sandbox_server.stats().served[-1].result
    daemon.terminate()
    # What a database kept before cards were stored: the raw reply, without its cards.
    with closing(sqlite3.connect(daemon.env["AISD_DB_PATH"])) as db, db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(
            "DELETE FROM transactions WHERE account_id IN "
            "(SELECT id FROM accounts WHERE kind = 'card')"
        )
        db.execute("DELETE FROM accounts WHERE kind = 'card'")

    done = _cli(daemon, "replay")
    assert done.returncode == 0, done.stderr
    assert "replayed 1 imports" in done.stdout

    daemon.start()
    data = daemon.client.owner_data("rene")
    by_id = {c["cardId"]: c for c in data["creditCards"]}
    assert set(by_id) == {c.card_id for c in served.credit_cards}
    for card in served.credit_cards:
        assert Counter(stored_facts(by_id[card.card_id])) == Counter(served_facts(card))
    for account in served.accounts:
        [stored] = [a for a in data["accounts"] if a["iban"] == account.iban]
        assert Counter(stored_facts(stored)) == Counter(served_facts(account))
