"""The data side's pure conversions: verbatim fields, owners and the success event's extras."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from aisd.events import success_extras
from aisd.kontomatik._models import (
    Account,
    CreditCard,
    Field,
    ImportResult,
    MoneyTransaction,
    Owner,
    Skipped,
)
from aisd.store.sqlite._codec import tx_from_row, tx_values
from aisd.store.sqlite._data_codec import (
    fields_from_json,
    fields_json,
    fields_to_json,
    owner_json,
)

tags = st.sampled_from(["a", "b", "variableSymbol", "details"])
fields: st.SearchStrategy[tuple[Field, ...]] = st.recursive(
    st.lists(st.tuples(tags, st.text(max_size=5)), max_size=3).map(tuple),
    lambda inner: st.lists(st.tuples(tags, st.text(max_size=5) | inner), max_size=3).map(tuple),
    max_leaves=8,
)


@given(fields)
def test_verbatim_fields_survive_the_database(extra: tuple[Field, ...]) -> None:
    assert fields_from_json(fields_to_json(extra)) == extra
    tx = MoneyTransaction(date(2023, 1, 1), None, Decimal("1"), None, "t", extra=extra)
    # Stored and read back, a transaction equals the parsed one: the merge sees no change.
    assert tx_from_row(tx_values(tx)) == tx


def test_owner_json_has_every_field_nested_ones_as_objects() -> None:
    owner = Owner(
        "Maria",
        "OWNER",
        "Stolarska 15",
        (
            ("polishPesel", "85010112345"),
            ("phone", "+48 600"),
            ("phone", "+48 601"),
            ("document", (("type", "ID"), ("number", "ABC"))),
        ),
    )
    assert owner_json(owner) == {
        "name": "Maria",
        "kind": "OWNER",
        "address": "Stolarska 15",
        "polishPesel": "85010112345",
        "phone": ["+48 600", "+48 601"],
        "document": {"type": "ID", "number": "ABC"},
    }
    assert fields_json(()) == {}


def test_success_extras_name_partial_accounts_and_cards_and_count_skipped() -> None:
    result = ImportResult(
        accounts=(
            Account("PL1", None, "PLN", None, None, partial_due_to_timeout=True),
            Account("PL2", None, "PLN", None, None),
        ),
        credit_cards=(CreditCard("C1", None, "**** 1", partial_due_to_timeout=True),),
        skipped=(Skipped("accounts/account[1]/currencyBalance", "not a decimal number"),),
    )
    assert success_extras(result) == {
        "creditCards": 1,
        "partialAccounts": ["PL1", "C1"],
        "skipped": 1,
    }
