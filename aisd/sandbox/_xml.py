"""Reply envelopes, shaped like the captured Kontomatik replies in ``tests/fixtures/kontomatik``.

Pure functions from values to UTF-8 bytes; element order follows the real replies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus

from aisd.kontomatik._models import (
    Account,
    Command,
    CreditCard,
    Field,
    ImportResult,
    MoneyTransaction,
    Owner,
)

USER = "sandbox"  # the ``user`` attribute: the API client's name upstream

_UNAUTHORIZED_COMMENT = """
    We don't know who you are.
    We see your request with an API key we do not recognise.
    This is the aisd sandbox: send the sandbox's API key in the X-Api-Key header.
  """


def status_line(code: int) -> str:
    """``404`` -> ``"404 Not Found"``, as the ``status`` attribute spells it."""
    return f"{code} {HTTPStatus(code).phrase}"


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _root(
    code: int, now: datetime, *, owner_external_id: str | None = None, user: bool = True
) -> ET.Element:
    root = ET.Element("reply", {"status": status_line(code)})
    if user:
        root.set("user", USER)
    if owner_external_id is not None:
        root.set("ownerExternalId", owner_external_id)
    root.set("responseTimestamp", _timestamp(now))
    return root


def _text(parent: ET.Element, tag: str, text: str | None) -> None:
    if text is not None:
        ET.SubElement(parent, tag).text = text


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root, space="   ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n").encode()


def error_reply(
    code: int, name: str, message: str, now: datetime, *, owner_external_id: str | None = None
) -> bytes:
    """An API error: ``<reply status=…><exception name=…><message>…</message></exception>``."""
    root = _root(code, now, owner_external_id=owner_external_id)
    exception = ET.SubElement(root, "exception", {"name": name})
    _text(exception, "message", message)
    return _serialize(root)


def unauthorized_reply(now: datetime) -> bytes:
    """HTTP 401: a ``<comment>`` and no exception, no ``user`` (the caller is unknown)."""
    root = _root(401, now, user=False)
    _text(root, "comment", _UNAUTHORIZED_COMMENT)
    return _serialize(root)


def empty_reply(now: datetime, *, owner_external_id: str | None = None) -> bytes:
    """``<reply status="200 OK" …/>``."""
    return _serialize(_root(200, now, owner_external_id=owner_external_id))


def session_reply(
    now: datetime,
    *,
    session_id: str,
    signature: str,
    multiple_access_id: str | None,
    owner_external_id: str,
) -> bytes:
    """A session (Mock Session, Reuse Multiple Access), with its token when one was granted."""
    root = _root(200, now, owner_external_id=owner_external_id)
    ET.SubElement(root, "session", {"id": session_id, "signature": signature})
    _text(root, "multipleAccessId", multiple_access_id)
    return _serialize(root)


def _fields(parent: ET.Element, fields: tuple[Field, ...]) -> None:
    for tag, value in fields:
        if isinstance(value, str):
            _text(parent, tag, value)
        else:
            _fields(ET.SubElement(parent, tag), value)


def _owner(parent: ET.Element, owner: Owner) -> None:
    element = ET.SubElement(parent, "owner")
    _text(element, "name", owner.name)
    _text(element, "address", owner.address)
    _fields(element, owner.extra)
    _text(element, "kind", owner.kind)


def _owners(parent: ET.Element, owners: tuple[Owner, ...], *, split: bool = False) -> None:
    # Some banks list each owner of an account in an <owners> block of its own.
    blocks = [(o,) for o in owners] if split and owners else [owners]
    for block in blocks:
        element = ET.SubElement(parent, "owners")
        for owner in block:
            _owner(element, owner)


def _transaction(parent: ET.Element, tx: MoneyTransaction) -> None:
    element = ET.SubElement(parent, "moneyTransaction")
    _text(element, "transactionOn", tx.transaction_on.isoformat())
    _text(element, "bookedOn", tx.booked_on.isoformat() if tx.booked_on else None)
    _text(element, "currencyAmount", _money(tx.amount))
    _text(element, "currencyBalance", _money(tx.balance) if tx.balance is not None else None)
    _text(element, "title", tx.title)
    _text(element, "party", tx.party)
    _text(element, "partyIban", tx.party_iban)
    _text(element, "kind", tx.kind)
    _text(element, "status", tx.status)
    if tx.labels:
        labels = ET.SubElement(element, "labels")
        for label in tx.labels:
            _text(labels, "label", label)


def _account(parent: ET.Element, account: Account, *, split_owners: bool) -> None:
    element = ET.SubElement(parent, "account")
    if account.partial_due_to_timeout:
        element.set("partialDueToTimeout", "true")
    _text(element, "name", account.name)
    _text(element, "friendlyName", account.friendly_name)
    _text(element, "iban", account.iban)
    _text(
        element, "currencyBalance", _money(account.balance) if account.balance is not None else None
    )
    funds = account.funds_available
    _text(element, "currencyFundsAvailable", _money(funds) if funds is not None else None)
    _text(element, "currencyName", account.currency_name)
    since = account.active_since_at_least
    _text(element, "activeSinceAtLeast", since.isoformat() if since else None)
    if account.direct_debit is not None:
        ET.SubElement(element, "directDebit", {"available": str(account.direct_debit).lower()})
    transactions = ET.SubElement(element, "moneyTransactions")
    for tx in account.transactions:
        _transaction(transactions, tx)
    _owners(element, account.owners, split=split_owners)


def _amount(parent: ET.Element, tag: str, value: Decimal | None) -> None:
    _text(parent, tag, _money(value) if value is not None else None)


def _card(parent: ET.Element, card: CreditCard) -> None:
    """A ``creditCard`` with the field names and order of Kontomatik's model."""
    element = ET.SubElement(parent, "creditCard")
    if card.partial_due_to_timeout:
        element.set("partialDueToTimeout", "true")
    _text(element, "name", card.name)
    _text(element, "cardId", card.card_id)
    _text(element, "iban", card.iban)
    _text(element, "number", card.number)
    _amount(element, "currencyBalance", card.balance)
    _amount(element, "currencyFundsAvailable", card.funds_available)
    _text(element, "currencyName", card.currency_name)
    _text(element, "owner", card.owner)
    _amount(element, "limit", card.limit)
    _amount(element, "interest", card.interest)
    _text(element, "dueDate", card.due_date.isoformat() if card.due_date else None)
    _owners(element, card.owners)
    transactions = ET.SubElement(element, "moneyTransactions")
    for tx in card.transactions:
        _transaction(transactions, tx)


def _result(parent: ET.Element, result: ImportResult, *, split_owners: bool) -> None:
    element = ET.SubElement(parent, "result")
    _owners(element, result.owners)
    accounts = ET.SubElement(element, "accounts")
    for account in result.accounts:
        _account(accounts, account, split_owners=split_owners)
    if result.credit_cards:
        cards = ET.SubElement(element, "creditCards")
        for card in result.credit_cards:
            _card(cards, card)


def command_reply(
    code: int, command: Command, now: datetime, *, split_owners: bool = False
) -> bytes:
    """A command (Default Import's 202, Get Import Result's 200) with its result or failure;
    ``split_owners`` lists each account owner in an ``<owners>`` block of its own."""
    root = _root(code, now, owner_external_id=command.owner_external_id)
    attributes = {"id": command.id, "state": str(command.state)}
    if command.name is not None:
        attributes["name"] = command.name
    if command.target is not None:
        attributes["target"] = command.target
        attributes["institution"] = command.target
    element = ET.SubElement(root, "command", attributes)
    progress = ET.SubElement(element, "progress")
    _text(progress, "value", str(command.progress or 0))
    if command.result is not None:
        _result(element, command.result, split_owners=split_owners)
    if command.failure is not None:
        exception = ET.SubElement(element, "exception", {"name": command.failure.name})
        _text(exception, "message", command.failure.message)
        _text(exception, "friendlyMessage", command.failure.friendly_message)
    return _serialize(root)


def reuse_command_reply(
    now: datetime,
    *,
    command_id: str,
    state: str,
    session: tuple[str, str] | None,
    owner_external_id: str,
) -> bytes:
    """The command-shaped Reuse Multiple Access: a command to poll, whose result holds the
    session once it succeeded."""
    root = _root(200 if session else 202, now, owner_external_id=owner_external_id)
    element = ET.SubElement(
        root, "command", {"id": command_id, "state": state, "name": "ReuseMultipleAccessCommand"}
    )
    if session is not None:
        result = ET.SubElement(element, "result")
        ET.SubElement(result, "session", {"id": session[0], "signature": session[1]})
    return _serialize(root)


def garbage_reply(now: datetime) -> bytes:
    """Well-formed XML of no shape aisd knows (a changed upstream, a proxy's page)."""
    root = _root(200, now)
    _text(ET.SubElement(root, "surprise"), "note", "This reply changed shape.")
    return _serialize(root)


def owner_scores_reply(
    now: datetime, *, owner_external_id: str, score: float, percentile: float, tier: str
) -> bytes:
    """A scoring reply like ``v1.owner-scores-reply.xml``."""
    root = _root(200, now, owner_external_id=owner_external_id)
    models = ET.SubElement(root, "models")
    model = ET.SubElement(
        models, "model", {"id": "common-2023-03-07", "retrainedAt": "2023-03-16T07:11:33Z"}
    )
    scores = ET.SubElement(model, "scores")
    for tag, value in (("score", score), ("scorePercentile", percentile), ("scoreTier", tier)):
        _text(ET.SubElement(scores, tag), "value", str(value))
    return _serialize(root)
