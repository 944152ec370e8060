"""Pure conversions from finished reply elements to typed values.

Each function takes one complete element (a transaction, an account, an owner...) and returns a
frozen value. Shapes are taken leniently: optional children may be missing, unknown children of
transactions and owners are kept verbatim in ``extra``, and alternative spellings seen in other
clients are accepted where the shape is uncertain (credit cards). A value that cannot be read
(an amount that is not a number, a date that is not a date) makes the whole reply malformed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from aisd.kontomatik._guard import malformed
from aisd.kontomatik._models import (
    Account,
    CommandFailure,
    CreditCard,
    ModelScore,
    MoneyTransaction,
    Owner,
    ReplyMeta,
)

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


def flat_text(element: ET.Element) -> str:
    """All text inside an element, for unknown children that may nest."""
    return "".join(element.itertext()).strip()


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


def reply_meta(root: ET.Element) -> ReplyMeta:
    """The attributes of a reply's root element."""
    attrib = root.attrib
    return ReplyMeta(
        status=attrib.get("status", ""),
        user=attrib.get("user"),
        owner_external_id=attrib.get("ownerExternalId"),
        response_timestamp=to_datetime(attrib.get("responseTimestamp"), "responseTimestamp"),
    )


def money_transaction(element: ET.Element) -> MoneyTransaction:
    """One ``moneyTransaction`` (or a credit card's transaction of the same shape)."""
    fields: dict[str, str | None] = {}
    labels: tuple[str, ...] = ()
    extra: list[tuple[str, str]] = []
    for child in element:
        tag = child.tag
        if tag in _TRANSACTION_FIELDS:
            fields[tag] = text(child)
        elif tag == "labels":
            labels = tuple(label for label in map(text, child) if label is not None)
        else:
            extra.append((tag, flat_text(child)))
    get = fields.get
    # A transaction with no own date is dated by its booking (seen for some card feeds).
    transaction_on = to_date(get("transactionOn") or get("bookedOn"), "transactionOn")
    amount = to_decimal(get("currencyAmount") or get("amount"), "currencyAmount")
    if transaction_on is None or amount is None:
        raise malformed("a transaction lacks transactionOn or currencyAmount")
    return MoneyTransaction(
        transaction_on=transaction_on,
        booked_on=to_date(get("bookedOn"), "bookedOn"),
        amount=amount,
        balance=to_decimal(get("currencyBalance"), "currencyBalance"),
        title=get("title") or "",
        party=get("party"),
        party_iban=get("partyIban"),
        kind=get("kind"),
        status=get("status"),
        labels=labels,
        extra=tuple(extra),
    )


def owner(element: ET.Element) -> Owner:
    """One ``owner`` of an owners list."""
    extra = tuple(
        (child.tag, flat_text(child)) for child in element if child.tag not in _OWNER_FIELDS
    )
    return Owner(
        name=text(element.find("name")) or "",
        kind=text(element.find("kind")),
        address=text(element.find("address")),
        extra=extra,
    )


def owners(element: ET.Element | None) -> tuple[Owner, ...]:
    """The ``owner`` children of an ``owners`` element (none when it is absent)."""
    if element is None:
        return ()
    return tuple(owner(child) for child in element if child.tag == "owner")


def account(element: ET.Element, transactions: Sequence[MoneyTransaction]) -> Account:
    """One ``account``; its transactions were read (and dropped) while streaming."""
    find = element.find
    direct_debit = find("directDebit")
    return Account(
        iban=text(find("iban")) or "",
        name=text(find("name")),
        currency_name=text(find("currencyName")) or "",
        balance=to_decimal(text(find("currencyBalance")), "account currencyBalance"),
        funds_available=to_decimal(
            text(find("currencyFundsAvailable")), "account currencyFundsAvailable"
        ),
        friendly_name=text(find("friendlyName")),
        active_since_at_least=to_date(text(find("activeSinceAtLeast")), "activeSinceAtLeast"),
        direct_debit=None if direct_debit is None else _is_true(direct_debit.get("available")),
        partial_due_to_timeout=_is_true(element.get("partialDueToTimeout")),
        owners=owners(find("owners")),
        transactions=tuple(transactions),
    )


def credit_card(element: ET.Element, transactions: Sequence[MoneyTransaction]) -> CreditCard:
    """One ``creditCard``: its shape is only known from other clients, so spellings vary."""
    return CreditCard(
        name=_first_text(element, ("name", "friendlyName")),
        number=_first_text(element, ("number", "cardNumber")),
        currency_name=_first_text(element, ("currencyName",)),
        balance=to_decimal(
            _first_text(element, ("currencyBalance", "balance")), "credit card balance"
        ),
        available_limit=to_decimal(
            _first_text(element, ("currencyAvailableLimit", "availableLimit")),
            "credit card availableLimit",
        ),
        credit_limit=to_decimal(
            _first_text(element, ("currencyCreditLimit", "creditLimit")),
            "credit card creditLimit",
        ),
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
    """A command's ``<progress><value>n</value></progress>``."""
    value = text(element.find("progress/value"))
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise malformed("command progress is not an integer") from None


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
