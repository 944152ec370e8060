"""Conversions between interface values and SQLite column values (pure).

Times are stored as fixed-width ISO-8601 UTC text with microseconds and a ``Z``, so text order is
time order; dates as ``YYYY-MM-DD``; amounts as decimal text, exact.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from aisd.kontomatik._models import MoneyTransaction
from aisd.store._records import StoredTransaction
from aisd.store.sqlite._data_codec import fields_from_json, fields_to_json

__all__ = [
    "TxRow",
    "date_in",
    "dec_in",
    "dec_out",
    "dt_in",
    "dt_out",
    "json_in",
    "json_out",
    "opt_date_out",
    "opt_dt_out",
    "tx_from_row",
    "tx_values",
]

# transaction_on, booked_on, amount, balance, title, party, party_iban, kind, status, labels, extra
TxRow = tuple[str, str | None, str, str | None, str, str | None, str | None, str | None,
              str | None, str, str]  # fmt: skip


def dt_in(value: datetime) -> str:
    """A tz-aware datetime as stored text (UTC).

    Raises:
        ValueError: the datetime is naive; a naive time has no defined instant.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime given to the store; pass a tz-aware UTC datetime")
    # The fixed-width form 2026-12-01T15:02:25.951174Z: isoformat writes it in about half the
    # time strftime("%Y-%m-%dT%H:%M:%S.%fZ") takes; an aware UTC time's ends in "+00:00".
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def dt_out(value: str) -> datetime:
    """Stored text as a tz-aware UTC datetime."""
    # fromisoformat reads the fixed-width form (and its 'Z') several times faster than strptime,
    # and reads the 'Z' the store writes as UTC already.
    at = datetime.fromisoformat(value)
    return at if at.tzinfo is UTC else at.astimezone(UTC)


def opt_dt_out(value: str | None) -> datetime | None:
    """Stored text of a nullable column as a tz-aware UTC datetime, or None."""
    return None if value is None else dt_out(value)


def date_in(value: date | None) -> str | None:
    """A date as stored text, or None."""
    return None if value is None else value.isoformat()


def opt_date_out(value: str | None) -> date | None:
    """Stored text of a nullable column as a date, or None."""
    return None if value is None else date.fromisoformat(value)


def dec_in(value: Decimal | None) -> str | None:
    """An amount as exact decimal text, or None."""
    return None if value is None else str(value)


def dec_out(value: str | None) -> Decimal | None:
    """Stored decimal text as a Decimal, or None."""
    return None if value is None else Decimal(value)


def json_in(value: Any) -> str:
    """A JSON column value; non-ASCII kept readable (Polish titles, names)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_out(value: str | None) -> Any:
    """A JSON column as Python values (None for NULL)."""
    return None if value is None else json.loads(value)


def tx_values(tx: MoneyTransaction) -> TxRow:
    """A transaction's column values in the order of :data:`TxRow`."""
    return (
        tx.transaction_on.isoformat(),
        None if tx.booked_on is None else tx.booked_on.isoformat(),
        str(tx.amount),
        None if tx.balance is None else str(tx.balance),
        tx.title,
        tx.party,
        tx.party_iban,
        tx.kind,
        tx.status,
        json_in(list(tx.labels)) if tx.labels else "[]",
        json_in(fields_to_json(tx.extra)) if tx.extra else "[]",
    )


def tx_from_row(row: Sequence[Any]) -> MoneyTransaction:
    """A transaction from column values in the order of :data:`TxRow`."""
    on, booked, amount, balance, title, party, party_iban, kind, status, labels, extra = row
    return MoneyTransaction(
        transaction_on=date.fromisoformat(on),
        booked_on=None if booked is None else date.fromisoformat(booked),
        amount=Decimal(amount),
        balance=None if balance is None else Decimal(balance),
        title=title,
        party=party,
        party_iban=party_iban,
        kind=kind,
        status=status,
        labels=tuple(json.loads(labels)) if labels != "[]" else (),
        extra=fields_from_json(json.loads(extra)) if extra != "[]" else (),
    )


def stored_transaction(row: sqlite3.Row) -> StoredTransaction:
    """A merged transaction from a row with the transaction's columns, its account's ``iban``
    and ``currency_name``."""
    return StoredTransaction(
        id=row["id"],
        account_iban=row["iban"],
        transaction_on=date.fromisoformat(row["transaction_on"]),
        booked_on=opt_date_out(row["booked_on"]),
        amount=Decimal(row["amount"]),
        balance=dec_out(row["balance"]),
        title=row["title"],
        party=row["party"],
        party_iban=row["party_iban"],
        kind=row["kind"],
        status=row["status"],
        labels=tuple(json_out(row["labels"])),
        currency_name=row["currency_name"],
    )
