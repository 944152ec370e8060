"""Typed values of Kontomatik replies.

Every class is a frozen, slotted dataclass: replies are values, parsed once and shared read-only
between the pipeline, the store and the merge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TypeAlias

# A child element kept verbatim: its tag and either its text or, when it nests, its children
# in the same form (unknown nested fields stay structured, not run together into one string).
Field: TypeAlias = "tuple[str, FieldValue]"
FieldValue: TypeAlias = "str | tuple[Field, ...]"


class CommandState(enum.StrEnum):
    """States of a Kontomatik command, as the ``state`` attribute spells them."""

    SETUP = "setup"
    IN_PROGRESS = "in_progress"
    SUCCESSFUL = "successful"
    ERROR = "error"
    FATAL = "fatal"

    @property
    def is_final(self) -> bool:
        """Whether polling must stop."""
        return self in (CommandState.SUCCESSFUL, CommandState.ERROR, CommandState.FATAL)


@dataclass(frozen=True, slots=True)
class Owner:
    """A person who owns or co-owns the imported accounts."""

    name: str
    kind: str | None = None  # OWNER, CO_OWNER, ... (bank-dependent)
    address: str | None = None
    # Every other field the bank sent (polishPesel, phone, email, birthDate, ...), verbatim, in
    # reply order. Personal data: never logged.
    extra: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class MoneyTransaction:
    """One ``moneyTransaction``. Kontomatik gives no id: identity is the merge's job."""

    transaction_on: date
    booked_on: date | None
    amount: Decimal  # currencyAmount, in the account's currency
    balance: Decimal | None  # currencyBalance after the transaction
    title: str
    party: str | None = None
    party_iban: str | None = None
    kind: str | None = None  # the bank's free text
    status: str | None = None  # DONE; pending spellings vary by bank
    labels: tuple[str, ...] = ()
    # Bank-specific optional fields (variableSymbol, constantSymbol, ...), verbatim.
    extra: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class Account:
    """One bank account with its transactions, newest first as Kontomatik sends them."""

    iban: str
    name: str | None
    currency_name: str
    balance: Decimal | None  # currencyBalance
    funds_available: Decimal | None  # currencyFundsAvailable
    friendly_name: str | None = None
    active_since_at_least: date | None = None
    direct_debit: bool | None = None
    partial_due_to_timeout: bool = False
    owners: tuple[Owner, ...] = ()
    transactions: tuple[MoneyTransaction, ...] = ()


@dataclass(frozen=True, slots=True)
class CreditCard:
    """A credit card and its transactions, with the field names of Kontomatik's own models
    (``creditCards/creditCard``; its rows are ``moneyTransactions/moneyTransaction``)."""

    card_id: str | None  # cardId
    name: str | None
    number: str | None  # masked, as the bank shows it
    iban: str | None = None
    currency_name: str | None = None
    balance: Decimal | None = None  # currencyBalance
    funds_available: Decimal | None = None  # currencyFundsAvailable
    limit: Decimal | None = None
    interest: Decimal | None = None  # ``interest`` (``interests`` in some models)
    due_date: date | None = None
    owner: str | None = None  # a free-text owner some banks give instead of ``owners``
    owners: tuple[Owner, ...] = ()
    partial_due_to_timeout: bool = False
    transactions: tuple[MoneyTransaction, ...] = ()

    @property
    def key(self) -> str:
        """What identifies the card across imports: its ``cardId``, else its masked number."""
        return self.card_id or self.number or self.iban or self.name or ""


@dataclass(frozen=True, slots=True)
class Skipped:
    """An element that could not be read and was left out of the result (it stays in the
    raw reply). ``path`` locates it (``accounts/account[1]/moneyTransactions/
    moneyTransaction[3]``) and ``reason`` says what was wrong; neither holds a value."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The ``<result>`` of a successful Default Import."""

    owners: tuple[Owner, ...] = ()
    accounts: tuple[Account, ...] = ()
    credit_cards: tuple[CreditCard, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def transaction_count(self) -> int:
        """Money transactions over all accounts and credit cards."""
        return sum(len(a.transactions) for a in self.accounts) + sum(
            len(c.transactions) for c in self.credit_cards
        )

    @property
    def containers(self) -> tuple[Account | CreditCard, ...]:
        """The accounts, then the credit cards: everything that holds transactions."""
        return (*self.accounts, *self.credit_cards)

    @property
    def partial(self) -> tuple[str, ...]:
        """IBANs of the accounts and keys of the cards marked ``partialDueToTimeout``."""
        return tuple(a.iban for a in self.accounts if a.partial_due_to_timeout) + tuple(
            c.key for c in self.credit_cards if c.partial_due_to_timeout
        )


@dataclass(frozen=True, slots=True)
class CommandFailure:
    """Why a command ended in ``error`` or ``fatal``: Kontomatik's exception, verbatim."""

    name: str
    message: str
    friendly_message: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A command as Default Import and Get Import Result describe it."""

    id: str
    state: CommandState
    name: str | None = None
    target: str | None = None
    progress: int | None = None
    owner_external_id: str | None = None  # echoed on the reply's root element
    result: ImportResult | None = None
    failure: CommandFailure | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A Kontomatik session: what the widget hands over, or what Reuse Multiple Access returns.

    The signature is a secret: it never appears in ``repr``.
    """

    session_id: str
    signature: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReplyMeta:
    """Attributes of a reply's root element."""

    status: str
    user: str | None = None
    owner_external_id: str | None = None
    response_timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImportReply:
    """A Get Import Result reply: the command, and the reply body kept for replay.

    ``raw`` is the whole reply body, gzip-compressed, kept only when the command ended
    ``successful`` (None otherwise): replay re-parses it with ``parse_command(gunzip_reply(raw))``.
    """

    command: Command
    raw: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ModelScore:
    """One scoring model's verdict on an owner (``/v1/owner-scores.xml``)."""

    model_id: str
    retrained_at: datetime | None
    score: float | None
    percentile: float | None = None
    tier: str | None = None
