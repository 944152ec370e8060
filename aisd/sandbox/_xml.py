"""Reply envelopes, shaped like the captured Kontomatik replies in ``tests/fixtures/kontomatik``.

Pure functions from values to UTF-8 bytes; element order follows the real replies. The bytes are
those ``xml.etree.ElementTree`` writes for the same tree after ``ET.indent(root, space="   ")``
(a unit test holds them to it), built directly: ElementTree's namespace and indentation passes
over every element cost more than the rest of a Get Import Result in ``aisd simulate``.
"""

from __future__ import annotations

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
INDENT = "   "

_UNAUTHORIZED_COMMENT = """
    We don't know who you are.
    We see your request with an API key we do not recognise.
    This is the aisd sandbox: send the sandbox's API key in the X-Api-Key header.
  """


class Element:
    """One XML element: a tag, attributes in the order set, and children. A child that is only
    a tag and its text (most of a reply) is that pair, which :func:`serialize` writes without
    the work an element needs."""

    __slots__ = ("attributes", "children", "tag")

    def __init__(self, tag: str, attributes: dict[str, str] | None = None) -> None:
        self.tag = tag
        self.attributes = attributes if attributes is not None else {}
        self.children: list[Element | tuple[str, str]] = []

    def set(self, name: str, value: str) -> None:
        """Set an attribute (after those already set, as ElementTree orders them)."""
        self.attributes[name] = value


def sub_element(parent: Element, tag: str, attributes: dict[str, str] | None = None) -> Element:
    """A new child of ``parent``, after its other children."""
    child = Element(tag, attributes)
    parent.children.append(child)
    return child


def _escape_text(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


_ATTRIBUTE_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ('"', "&quot;"),
    ("\r", "&#13;"),
    ("\n", "&#10;"),
    ("\t", "&#09;"),
)


def _escape_attribute(value: str) -> str:
    for raw, escaped in _ATTRIBUTE_ESCAPES:
        if raw in value:
            value = value.replace(raw, escaped)
    return value


def _write(element: Element, depth: int, out: list[str]) -> None:
    out.append("<" + element.tag)
    for name, value in element.attributes.items():
        out.append(f' {name}="{_escape_attribute(value)}"')
    if not element.children:
        out.append(" />")
        return
    out.append(">")
    # ET.indent's layout: each child on a line of its own, one level in.
    inner = "\n" + INDENT * (depth + 1)
    for child in element.children:
        out.append(inner)
        if isinstance(child, Element):
            _write(child, depth + 1, out)
        elif child[1]:
            out.append(f"<{child[0]}>{_escape_text(child[1])}</{child[0]}>")
        else:
            out.append(f"<{child[0]} />")
    out.append(f"\n{INDENT * depth}</{element.tag}>")


def serialize(root: Element) -> bytes:
    """The document: the XML declaration, then ``root`` indented by :data:`INDENT` per level."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n']
    _write(root, 0, out)
    out.append("\n")
    return "".join(out).encode()


def status_line(code: int) -> str:
    """``404`` -> ``"404 Not Found"``, as the ``status`` attribute spells it."""
    return f"{code} {HTTPStatus(code).phrase}"


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _root(
    code: int, now: datetime, *, owner_external_id: str | None = None, user: bool = True
) -> Element:
    root = Element("reply", {"status": status_line(code)})
    if user:
        root.set("user", USER)
    if owner_external_id is not None:
        root.set("ownerExternalId", owner_external_id)
    root.set("responseTimestamp", _timestamp(now))
    return root


def _text(parent: Element, tag: str, text: str | None) -> None:
    """A child holding only ``text`` (none when ``text`` is None)."""
    if text is not None:
        parent.children.append((tag, text))


def error_reply(
    code: int, name: str, message: str, now: datetime, *, owner_external_id: str | None = None
) -> bytes:
    """An API error: ``<reply status=…><exception name=…><message>…</message></exception>``."""
    root = _root(code, now, owner_external_id=owner_external_id)
    exception = sub_element(root, "exception", {"name": name})
    _text(exception, "message", message)
    return serialize(root)


def unauthorized_reply(now: datetime) -> bytes:
    """HTTP 401: a ``<comment>`` and no exception, no ``user`` (the caller is unknown)."""
    root = _root(401, now, user=False)
    _text(root, "comment", _UNAUTHORIZED_COMMENT)
    return serialize(root)


def empty_reply(now: datetime, *, owner_external_id: str | None = None) -> bytes:
    """``<reply status="200 OK" …/>``."""
    return serialize(_root(200, now, owner_external_id=owner_external_id))


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
    sub_element(root, "session", {"id": session_id, "signature": signature})
    _text(root, "multipleAccessId", multiple_access_id)
    return serialize(root)


def _fields(parent: Element, fields: tuple[Field, ...]) -> None:
    for tag, value in fields:
        if isinstance(value, str):
            _text(parent, tag, value)
        else:
            _fields(sub_element(parent, tag), value)


def _owner(parent: Element, owner: Owner) -> None:
    element = sub_element(parent, "owner")
    _text(element, "name", owner.name)
    _text(element, "address", owner.address)
    _fields(element, owner.extra)
    _text(element, "kind", owner.kind)


def _owners(parent: Element, owners: tuple[Owner, ...], *, split: bool = False) -> None:
    # Some banks list each owner of an account in an <owners> block of its own.
    blocks = [(o,) for o in owners] if split and owners else [owners]
    for block in blocks:
        element = sub_element(parent, "owners")
        for owner in block:
            _owner(element, owner)


def _transaction(parent: Element, tx: MoneyTransaction) -> None:
    element = sub_element(parent, "moneyTransaction")
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
        labels = sub_element(element, "labels")
        for label in tx.labels:
            _text(labels, "label", label)


def _account(parent: Element, account: Account, *, split_owners: bool) -> None:
    element = sub_element(parent, "account")
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
        sub_element(element, "directDebit", {"available": str(account.direct_debit).lower()})
    transactions = sub_element(element, "moneyTransactions")
    for tx in account.transactions:
        _transaction(transactions, tx)
    _owners(element, account.owners, split=split_owners)


def _amount(parent: Element, tag: str, value: Decimal | None) -> None:
    _text(parent, tag, _money(value) if value is not None else None)


def _card(parent: Element, card: CreditCard) -> None:
    """A ``creditCard`` with the field names and order of Kontomatik's model."""
    element = sub_element(parent, "creditCard")
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
    transactions = sub_element(element, "moneyTransactions")
    for tx in card.transactions:
        _transaction(transactions, tx)


def _result(parent: Element, result: ImportResult, *, split_owners: bool) -> None:
    element = sub_element(parent, "result")
    _owners(element, result.owners)
    accounts = sub_element(element, "accounts")
    for account in result.accounts:
        _account(accounts, account, split_owners=split_owners)
    if result.credit_cards:
        cards = sub_element(element, "creditCards")
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
    element = sub_element(root, "command", attributes)
    progress = sub_element(element, "progress")
    _text(progress, "value", str(command.progress or 0))
    if command.result is not None:
        _result(element, command.result, split_owners=split_owners)
    if command.failure is not None:
        exception = sub_element(element, "exception", {"name": command.failure.name})
        _text(exception, "message", command.failure.message)
        _text(exception, "friendlyMessage", command.failure.friendly_message)
    return serialize(root)


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
    element = sub_element(
        root, "command", {"id": command_id, "state": state, "name": "ReuseMultipleAccessCommand"}
    )
    if session is not None:
        result = sub_element(element, "result")
        sub_element(result, "session", {"id": session[0], "signature": session[1]})
    return serialize(root)


def garbage_reply(now: datetime) -> bytes:
    """Well-formed XML of no shape aisd knows (a changed upstream, a proxy's page)."""
    root = _root(200, now)
    _text(sub_element(root, "surprise"), "note", "This reply changed shape.")
    return serialize(root)


def owner_scores_reply(
    now: datetime, *, owner_external_id: str, score: float, percentile: float, tier: str
) -> bytes:
    """A scoring reply like ``v1.owner-scores-reply.xml``."""
    root = _root(200, now, owner_external_id=owner_external_id)
    models = sub_element(root, "models")
    model = sub_element(
        models, "model", {"id": "common-2023-03-07", "retrainedAt": "2023-03-16T07:11:33Z"}
    )
    scores = sub_element(model, "scores")
    for tag, value in (("score", score), ("scorePercentile", percentile), ("scoreTier", tier)):
        _text(sub_element(scores, tag), "value", str(value))
    return serialize(root)
