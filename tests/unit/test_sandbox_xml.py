"""The sandbox's replies are byte for byte what ElementTree writes for the same trees, indented.

The sandbox builds its reply bytes directly (``aisd.sandbox._xml``); ElementTree, which it used
before, is the reference: each reply's tree, written by ``ET.indent`` and ``ET.tostring``, must
give the same bytes, whatever text, attributes and nesting it holds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.kontomatik import parse_command
from aisd.kontomatik._models import (
    Account,
    Command,
    CommandFailure,
    CommandState,
    CreditCard,
    ImportResult,
    MoneyTransaction,
    Owner,
)
from aisd.sandbox import Sandbox, SandboxConfig, _xml

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

# Characters XML 1.0 can carry (no other control characters, no surrogates), with the ones
# that need escaping and the whitespace an attribute must encode well represented.
_XML_CHARS = st.characters(
    exclude_categories=["Cs"],
    exclude_characters=[chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe"],
)
TEXT = st.text(st.sampled_from("&<>\"' \t\n\r;ąż") | _XML_CHARS, max_size=12)


def _as_element_tree(element: _xml.Element | tuple[str, str]) -> ET.Element:
    if isinstance(element, tuple):
        leaf = ET.Element(element[0])
        leaf.text = element[1]
        return leaf
    copy = ET.Element(element.tag, dict(element.attributes))
    copy.extend(_as_element_tree(child) for child in element.children)
    return copy


def element_tree_writes(root: _xml.Element) -> bytes:
    """What ElementTree writes for the same tree, indented as the sandbox indents."""
    tree = _as_element_tree(root)
    ET.indent(tree, space=_xml.INDENT)
    body = ET.tostring(tree, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n").encode()


def checked(reply: Callable[[], bytes]) -> bytes:
    """``reply()``, asserted to be exactly ElementTree's bytes for the tree it serialised."""
    trees: list[_xml.Element] = []
    serialize = _xml.serialize

    def capture(root: _xml.Element) -> bytes:
        trees.append(root)
        return serialize(root)

    with mock.patch.object(_xml, "serialize", capture):
        written = reply()
    assert len(trees) == 1
    assert written == element_tree_writes(trees[0])
    assert written.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<reply ')
    return written


@settings(max_examples=150, deadline=None)
@given(name=TEXT, message=TEXT, owner=TEXT)
def test_an_error_reply_escapes_text_and_attributes_as_element_tree(
    name: str, message: str, owner: str
) -> None:
    reply = checked(
        lambda: _xml.error_reply(400, name or "X", message, NOW, owner_external_id=owner)
    )
    root = ET.fromstring(reply)
    exception = root.find("exception")
    assert exception is not None
    assert exception.get("name") == (name or "X")
    # ElementTree's parser folds a CR (and CR LF) in text to LF, as XML requires.
    assert (exception.findtext("message") or "") == message.replace("\r\n", "\n").replace(
        "\r", "\n"
    )
    assert root.get("ownerExternalId") == owner


def _transaction(title: str, labels: tuple[str, ...], booked: bool) -> MoneyTransaction:
    return MoneyTransaction(
        transaction_on=date(2026, 3, 1),
        booked_on=date(2026, 3, 2) if booked else None,
        amount=Decimal("-12.30"),
        balance=Decimal("100.00") if booked else None,
        title=title,
        party=title or None,
        kind="PRZELEW",
        status="DONE" if booked else "PENDING",
        labels=labels,
    )


@settings(max_examples=100, deadline=None)
@given(
    titles=st.lists(TEXT, max_size=4),
    labels=st.lists(TEXT, max_size=3),
    owner=TEXT,
    split=st.booleans(),
    failed=st.booleans(),
)
def test_a_command_reply_with_any_content_is_as_element_tree(
    titles: list[str], labels: list[str], owner: str, split: bool, failed: bool
) -> None:
    people = (Owner(name=owner, kind="OWNER", address=owner, extra=(("nested", (("a", owner),)),)),)
    transactions = tuple(
        _transaction(t, tuple(labels), booked=i % 2 == 0) for i, t in enumerate(titles)
    )
    result = ImportResult(
        owners=people,
        accounts=(
            Account(
                iban="PL61109010140000071219812874",
                name=owner,
                currency_name="PLN",
                balance=Decimal("1.00"),
                funds_available=None,
                direct_debit=True,
                partial_due_to_timeout=split,
                owners=people * 2,
                transactions=transactions,
            ),
        ),
        credit_cards=(
            CreditCard(card_id="1", name=owner, number="5100", owners=people, transactions=()),
        ),
    )
    command = Command(
        id="123",
        state=CommandState.ERROR if failed else CommandState.SUCCESSFUL,
        name="DefaultImportCommand",
        target=owner or None,
        progress=100,
        owner_external_id=owner,
        result=None if failed else result,
        failure=CommandFailure("Oops", owner, owner or None) if failed else None,
    )
    checked(lambda: _xml.command_reply(200, command, NOW, split_owners=split))


def test_every_reply_the_sandbox_serves_is_as_element_tree_and_parses_back() -> None:
    now = NOW
    config = SandboxConfig(cards_per_owner=1, owner_personal_fields=True, co_owner_rate=1.0)
    sandbox = Sandbox(config, clock=lambda: now)
    consent = sandbox.mint_consent("alice & <bob>", accounts=2)
    command = sandbox.default_import(consent.session_id, consent.signature, date(2025, 1, 1))
    replies = [checked(lambda: _xml.command_reply(202, command, now))]
    now += timedelta(seconds=config.command_seconds + 1)
    final = sandbox.get_command(command.id)
    assert final.state is CommandState.SUCCESSFUL
    replies += [
        checked(lambda: _xml.command_reply(200, final, now)),
        checked(lambda: _xml.command_reply(200, final, now, split_owners=True)),
        checked(lambda: _xml.unauthorized_reply(now)),
        checked(lambda: _xml.empty_reply(now, owner_external_id="alice")),
        checked(
            lambda: _xml.session_reply(
                now, session_id="1", signature="s", multiple_access_id="m", owner_external_id="a"
            )
        ),
        checked(
            lambda: _xml.reuse_command_reply(
                now, command_id="9", state="successful", session=("1", "s"), owner_external_id="a"
            )
        ),
        checked(
            lambda: _xml.reuse_command_reply(
                now, command_id="9", state="in_progress", session=None, owner_external_id="a"
            )
        ),
        checked(lambda: _xml.garbage_reply(now)),
        checked(
            lambda: _xml.owner_scores_reply(
                now, owner_external_id="a", score=0.5, percentile=0.25, tier="B"
            )
        ),
    ]
    # The real client's parser reads the result back as the sandbox made it.
    _, parsed = parse_command([replies[1]], max_bytes=2**26)
    assert parsed.result is not None
    assert final.result is not None
    assert [a.transactions for a in parsed.result.accounts] == [
        a.transactions for a in final.result.accounts
    ]
