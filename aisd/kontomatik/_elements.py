"""Pure conversions from finished reply elements to typed values.

Each function takes one complete element (a transaction, an account, an owner...) and returns a
frozen value. Shapes are taken leniently: optional children may be missing, unknown children of
transactions, owners and cards are kept verbatim (structured when they nest) in ``extra``, and an
optional value that cannot be read is left out and reported through ``skip`` (a path relative to
the element, and a reason; never the value). Only a transaction without a readable date or amount
is unusable as a whole: ``money_transaction`` raises ``MalformedReply`` and the reader
quarantines it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from aisd.kontomatik._errors import KontomatikError
from aisd.kontomatik._guard import malformed
from aisd.kontomatik._models import (
    Account,
    CommandFailure,
    CreditCard,
    Field,
    FieldValue,
    ModelScore,
    MoneyTransaction,
    Owner,
    ReplyMeta,
)

T = TypeVar("T")

# Reports an optional value left out: (path relative to the element, reason).
Skip = Callable[[str, str], None]

# Children of a moneyTransaction that map to fields; any other child lands in ``extra``.
_TRANSACTION_FIELDS = frozenset(
    {
        "transactionOn",
        "bookedOn",
        "currencyAmount",
        "amount",
        "currencyBalance",
        "title",
        "party",
        "partyIban",
        "kind",
        "status",
    }
)
_OWNER_FIELDS = frozenset({"name", "kind", "address"})


def text(element: ET.Element | None) -> str | None:
    """The stripped text of an element, None when it is absent or empty."""
    if element is None:
        return None
    value = element.text
    if value is None:
        return None
    value = value.strip()
    return value or None


def field_value(element: ET.Element) -> FieldValue:
    """An unknown child, verbatim: its text, or its own children when it nests."""
    if len(element) == 0:
        return text(element) or ""
    return tuple(field(child) for child in element)


def field(element: ET.Element) -> Field:
    """An unknown child as a ``(tag, value)`` pair."""
    return (element.tag, field_value(element))


def to_decimal(value: str | None, what: str) -> Decimal | None:
    """A finite decimal amount, or None for a missing value."""
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise malformed(f"{what} is not a decimal number") from None
    if not number.is_finite():
        raise malformed(f"{what} is not a finite number")
    return number


def to_date(value: str | None, what: str) -> date | None:
    """A ``YYYY-MM-DD`` date, or None for a missing value."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise malformed(f"{what} is not a YYYY-MM-DD date") from None


def to_datetime(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 time such as ``2023-05-23T07:42:50Z``, or None for a missing value."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise malformed(f"{what} is not an ISO 8601 time") from None


def to_float(value: str | None, what: str) -> float | None:
    """A floating-point number, or None for a missing value."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise malformed(f"{what} is not a number") from None


def _lenient(read: Callable[[], T], what: str, skip: Skip) -> T | None:
    """``read()``, or None with the value reported to ``skip`` when it cannot be read."""
    try:
        return read()
    except KontomatikError as exc:
        skip(what, exc.message)
        return None


def reply_meta(root: ET.Element) -> ReplyMeta:
    """The attributes of a reply's root element (an unreadable timestamp is left out)."""
    attrib = root.attrib
    try:
        timestamp = to_datetime(attrib.get("responseTimestamp"), "responseTimestamp")
    except KontomatikError:
        timestamp = None
    return ReplyMeta(
        status=attrib.get("status", ""),
        user=attrib.get("user"),
        owner_external_id=attrib.get("ownerExternalId"),
        response_timestamp=timestamp,
    )


def money_transaction(element: ET.Element, skip: Skip) -> MoneyTransaction:
    """One ``moneyTransaction`` (of an account or a credit card).

    Raises:
        RetryLaterError: ``MalformedReply`` when its date or amount is missing or unreadable:
            the caller quarantines the whole transaction.
    """
    fields: dict[str, str | None] = {}
    labels: list[str] = []
    extra: list[Field] = []
    for child in element:
        tag = child.tag
        if tag in _TRANSACTION_FIELDS:
            fields[tag] = text(child)
        elif tag == "labels":
            for n, label in enumerate(child, start=1):
                value = text(label)
                if len(label):
                    skip(f"labels/label[{n}]", "a label made of child elements")
                elif value is not None:
                    labels.append(value)
        else:
            extra.append(field(child))
    get = fields.get
    # A transaction with no own date is dated by its booking (seen for some card feeds).
    transaction_on = to_date(get("transactionOn") or get("bookedOn"), "transactionOn")
    amount = to_decimal(get("currencyAmount") or get("amount"), "currencyAmount")
    if transaction_on is None or amount is None:
        raise malformed("a transaction lacks transactionOn or currencyAmount")
    return MoneyTransaction(
        transaction_on=transaction_on,
        booked_on=_lenient(lambda: to_date(get("bookedOn"), "bookedOn"), "bookedOn", skip),
        amount=amount,
        balance=_lenient(
            lambda: to_decimal(get("currencyBalance"), "currencyBalance"), "currencyBalance", skip
        ),
        title=get("title") or "",
        party=get("party"),
        party_iban=get("partyIban"),
        kind=get("kind"),
        status=get("status"),
        labels=tuple(labels),
        extra=tuple(extra),
    )


def owner(element: ET.Element) -> Owner:
    """One ``owner`` of an owners list, with every field the bank sent."""
    return Owner(
        name=text(element.find("name")) or "",
        kind=text(element.find("kind")),
        address=text(element.find("address")),
        extra=tuple(field(child) for child in element if child.tag not in _OWNER_FIELDS),
    )


def owners(element: ET.Element | None) -> tuple[Owner, ...]:
    """The ``owner`` children of an ``owners`` element (none when it is absent)."""
    if element is None:
        return ()
    return tuple(owner(child) for child in element if child.tag == "owner")


def owners_of(element: ET.Element) -> tuple[Owner, ...]:
    """Every ``owner`` of every ``owners`` block of an account or card (owner and co-owner
    may come in blocks of their own)."""
    return tuple(o for block in element.iterfind("owners") for o in owners(block))


def account(element: ET.Element, transactions: Sequence[MoneyTransaction], skip: Skip) -> Account:
    """One ``account``; its transactions were read (and dropped) while streaming."""
    find = element.find

    def amount(tag: str) -> Decimal | None:
        return _lenient(lambda: to_decimal(text(find(tag)), tag), tag, skip)

    direct_debit = find("directDebit")
    return Account(
        iban=text(find("iban")) or "",
        name=text(find("name")),
        currency_name=text(find("currencyName")) or "",
        balance=amount("currencyBalance"),
        funds_available=amount("currencyFundsAvailable"),
        friendly_name=text(find("friendlyName")),
        active_since_at_least=_lenient(
            lambda: to_date(text(find("activeSinceAtLeast")), "activeSinceAtLeast"),
            "activeSinceAtLeast",
            skip,
        ),
        direct_debit=None if direct_debit is None else _is_true(direct_debit.get("available")),
        partial_due_to_timeout=_is_true(element.get("partialDueToTimeout")),
        owners=owners_of(element),
        transactions=tuple(transactions),
    )


def credit_card(
    element: ET.Element, transactions: Sequence[MoneyTransaction], skip: Skip
) -> CreditCard:
    """One ``creditCard``, as Kontomatik's models name its fields."""
    find = element.find

    def amount(*tags: str) -> Decimal | None:
        value = _first_text(element, tags)
        return _lenient(lambda: to_decimal(value, tags[0]), tags[0], skip)

    return CreditCard(
        card_id=text(find("cardId")),
        name=text(find("name")),
        number=text(find("number")),
        iban=text(find("iban")),
        currency_name=text(find("currencyName")),
        balance=amount("currencyBalance"),
        funds_available=amount("currencyFundsAvailable"),
        limit=amount("limit"),
        interest=amount("interest", "interests"),
        due_date=_lenient(lambda: to_date(text(find("dueDate")), "dueDate"), "dueDate", skip),
        owner=text(find("owner")),
        owners=owners_of(element),
        partial_due_to_timeout=_is_true(element.get("partialDueToTimeout")),
        transactions=tuple(transactions),
    )


def failure(element: ET.Element) -> CommandFailure:
    """An ``exception`` element: its name attribute and message children, verbatim."""
    return CommandFailure(
        name=element.get("name") or "UnnamedException",
        message=text(element.find("message")) or "",
        friendly_message=text(element.find("friendlyMessage")),
    )


def progress(element: ET.Element) -> int | None:
    """A command's ``<progress><value>n</value></progress>``; None when absent or not an
    integer (progress is advisory: it never decides anything)."""
    value = text(element.find("progress/value"))
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def model_score(element: ET.Element) -> ModelScore:
    """One ``model`` of an owner-scores reply."""
    return ModelScore(
        model_id=element.get("id") or "",
        retrained_at=to_datetime(element.get("retrainedAt"), "retrainedAt"),
        score=to_float(text(element.find("scores/score/value")), "score"),
        percentile=to_float(text(element.find("scores/scorePercentile/value")), "percentile"),
        tier=text(element.find("scores/scoreTier/value")),
    )


def _first_text(element: ET.Element, tags: Sequence[str]) -> str | None:
    for tag in tags:
        value = text(element.find(tag))
        if value is not None:
            return value
    return None


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"
