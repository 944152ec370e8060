"""The Kontomatik reply parsers: every real fixture, chunked feeding, safety and error mapping."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import random
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisd.kontomatik import (
    Command,
    CommandState,
    ImportResult,
    JobsQuotaExceededError,
    KontomatikError,
    MoneyTransaction,
    QuotaError,
    ReplyMeta,
    RetryLaterError,
    SessionDeadError,
    TokenDeadError,
    UnauthorizedError,
    UnknownApiError,
    gunzip_reply,
    parse_command,
    parse_data_reply,
    parse_error,
    parse_owner_scores,
    parse_reuse,
    parse_session,
)
from aisd.kontomatik._errors import UnexpectedReplyError
from aisd.kontomatik._gzip import HOLD_BYTES, GzipWriter
from aisd.kontomatik._paths import command_result
from tests.conftest import FIXTURES

MAX = 1 << 24
SUCCESS = (FIXTURES / "v1.command-reply.default-import.xml").read_bytes()


def _amounts(data: bytes) -> list[Decimal]:
    """Transaction amounts read independently of the parser."""
    found = re.findall(rb"<currencyAmount>([^<]+)</currencyAmount>", data)
    return [Decimal(m.decode()) for m in found]


def command_of(data: bytes) -> ImportResult:
    """The result of a successful command reply."""
    _, command = parse_command([data], max_bytes=MAX)
    assert command.result is not None
    return command.result


def _whole(data: bytes) -> tuple[ReplyMeta, Command]:
    return parse_command([data], max_bytes=MAX)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _command_reply(body: str, *, state: str = "successful") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<reply status="200 OK">'
        f'<command id="7" state="{state}" name="DefaultImportCommand">{body}</command></reply>'
    ).encode()


# -- the real replies ---------------------------------------------------------------------------


def test_default_import_reply_is_a_setup_command(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "v1.default-import-reply.xml").read_bytes()
    meta, command = parse_command([data], max_bytes=MAX)
    assert meta.status == "202 Accepted"
    assert meta.user == "brsolutions-test"
    assert meta.response_timestamp == datetime(2023, 5, 23, 7, 39, 6, tzinfo=UTC)
    owner_id = "kontomatik-27452a6f-3efc-4e17-b07e-6f0dc6225b27"
    assert meta.owner_external_id == owner_id
    assert command == Command(
        id="455026009",
        state=CommandState.SETUP,
        name="DefaultImportCommand",
        progress=0,
        owner_external_id=owner_id,
    )


def test_successful_import_result_holds_every_transaction() -> None:
    meta, command = _whole(SUCCESS)
    assert meta.status == "200 OK"
    assert command.state is CommandState.SUCCESSFUL
    assert command.target == "KontoBank"
    assert command.failure is None
    result = command.result
    assert result is not None
    assert [(o.name, o.kind, o.address) for o in result.owners] == [
        ("Tadeusz Krajowy", "CO_OWNER", None),
        ("Maria Sochacka", "OWNER", "Stolarska 15/2 33-543 Jaworzno"),
    ]
    (account,) = result.accounts
    assert account.iban == "PL69137013140000049678278112"
    assert account.name == "Konto 0"
    assert account.friendly_name == "Konto"
    assert account.currency_name == "PLN"
    assert account.balance == Decimal("259402.51")
    assert account.funds_available == Decimal("259402.51")
    assert account.active_since_at_least == date(2022, 10, 8)
    assert account.direct_debit is True
    assert account.partial_due_to_timeout is False
    assert [o.name for o in account.owners] == ["Tadeusz Krajowy", "Maria Sochacka"]
    assert result.transaction_count == 72
    expected = _amounts(SUCCESS)
    assert len(expected) == 72
    assert sum(t.amount for t in account.transactions) == sum(expected)
    # The balances agree: 259402.51 after the newest, 230044.08 + 20.00 before the oldest.
    assert sum(expected) == Decimal("29338.43") == Decimal("259402.51") - Decimal("230064.08")
    assert [t.amount for t in account.transactions] == expected
    assert account.transactions[0] == MoneyTransaction(
        transaction_on=date(2023, 5, 22),
        booked_on=date(2023, 5, 23),
        amount=Decimal("-0.01"),
        balance=Decimal("259402.51"),
        title="5QATW54J1O Oplata weryfikacyjna",
        party=None,
        party_iban="PL16156000132367053266830002",
        kind="PRZELEW ZEWNĘTRZNY",
        status="DONE",
        labels=("monthly", "verification"),
    )
    last = account.transactions[-1]
    assert (last.transaction_on, last.amount, last.party) == (
        date(2022, 11, 25),
        Decimal("-20.00"),
        "Jan Kowalski Dunikowskiego 23B, 01-200 Warszawa",
    )
    labels = sum(len(t.labels) for t in account.transactions)
    assert labels == SUCCESS.count(b"<label>") == 112
    assert sum(t.party is not None for t in account.transactions) == 42


def test_failed_command_carries_its_exception(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "v1.command-reply.exception.xml").read_bytes()
    _, command = parse_command([data], max_bytes=MAX)
    assert command.state is CommandState.ERROR
    assert command.state.is_final
    assert command.progress == 20
    assert command.result is None
    assert command.failure is not None
    assert command.failure.name == "SessionExpired"
    assert command.failure.message == "Exception message"
    assert command.failure.friendly_message == "Exception message in local language"


def test_data_reply_shares_the_result_shape(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "v1.data-reply.xml").read_bytes()
    result = parse_data_reply([data], max_bytes=MAX)
    assert [o.name for o in result.owners] == ["Tadeusz Krajowy", "Maria Sochacka"]
    (account,) = result.accounts
    assert account.iban == "PL69137013140000049678278112"
    assert [o.name for o in account.owners] == ["Maria Sochacka", "Tadeusz Krajowy"]
    assert [t.amount for t in account.transactions] == _amounts(data)
    assert result.transaction_count == 72
    assert result.credit_cards == ()
    # Every element of the real replies is read: nothing is quarantined.
    assert result.skipped == ()
    assert command_of(SUCCESS).skipped == ()


def test_owner_scores(fixtures_dir: Path) -> None:
    (score,) = parse_owner_scores((fixtures_dir / "v1.owner-scores-reply.xml").read_bytes())
    assert score.model_id == "common-2023-03-07"
    assert score.retrained_at == datetime(2023, 3, 16, 7, 11, 33, tzinfo=UTC)
    assert score.score == pytest.approx(0.7204348357228043)
    assert score.percentile == pytest.approx(0.8085198489453809)
    assert score.tier == "C"


@pytest.mark.parametrize(
    ("name", "status", "cls", "error_name"),
    [
        ("unauthorized-reply.xml", 401, UnauthorizedError, "Unauthorized"),
        ("session-expired-reply.xml", 404, SessionDeadError, "InvalidSessionId"),
        ("command-not-available-reply.xml", 400, UnknownApiError, "CommandNotAvailable"),
    ],
)
def test_error_fixtures(
    fixtures_dir: Path, name: str, status: int, cls: type[KontomatikError], error_name: str
) -> None:
    error = parse_error(status, (fixtures_dir / name).read_bytes())
    assert type(error) is cls
    assert error.name == error_name
    assert error.http_status == status


def test_session_expired_message_is_kept(fixtures_dir: Path) -> None:
    error = parse_error(404, (fixtures_dir / "session-expired-reply.xml").read_bytes())
    assert error.message == "Session expired."


def test_unauthorized_drops_the_comment_that_echoes_the_key(fixtures_dir: Path) -> None:
    error = parse_error(401, (fixtures_dir / "unauthorized-reply.xml").read_bytes())
    assert "f7" not in str(error)
    assert "IP" in error.message


# -- chunked feeding and replay -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SUCCESS)), max_size=40))
def test_any_chunking_gives_the_same_command(cuts: list[int]) -> None:
    assert parse_command(_chunks(SUCCESS, cuts), max_bytes=MAX) == _whole(SUCCESS)


MIXED = _command_reply(
    "<result><accounts>"
    '<account partialDueToTimeout="true"><iban>PL1</iban><moneyTransactions>'
    "<moneyTransaction><transactionOn>2023-01-02</transactionOn>"
    "<currencyAmount>x</currencyAmount></moneyTransaction>"
    "<moneyTransaction><transactionOn>2023-01-01</transactionOn>"
    "<currencyAmount>1.00</currencyAmount><bookedOn>later</bookedOn></moneyTransaction>"
    "</moneyTransactions><owners><owner><name>A</name></owner></owners>"
    "<owners><owner><name>B</name></owner></owners></account></accounts>"
    "<creditCards><creditCard><cardId>C</cardId><limit>?</limit><moneyTransactions>"
    "<moneyTransaction><transactionOn>2023-01-03</transactionOn>"
    "<currencyAmount>-5.00</currencyAmount></moneyTransaction>"
    "<moneyTransaction><title>no date</title></moneyTransaction>"
    "</moneyTransactions></creditCard></creditCards></result>"
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(MIXED)), max_size=40))
def test_cards_owner_blocks_and_quarantine_do_not_depend_on_chunking(cuts: list[int]) -> None:
    result = command_of(MIXED)
    assert [s.path for s in result.skipped] == [
        "accounts/account[1]/moneyTransactions/moneyTransaction[1]",
        "accounts/account[1]/moneyTransactions/moneyTransaction[2]/bookedOn",
        "creditCards/creditCard[1]/moneyTransactions/moneyTransaction[2]",
        "creditCards/creditCard[1]/limit",
    ]
    assert [o.name for o in result.accounts[0].owners] == ["A", "B"]
    assert len(result.credit_cards[0].transactions) == 1
    assert parse_command(_chunks(MIXED, cuts), max_bytes=MAX) == _whole(MIXED)


def test_one_byte_chunks_give_the_same_command() -> None:
    chunks = [SUCCESS[i : i + 1] for i in range(len(SUCCESS))]
    assert parse_command(chunks, max_bytes=MAX) == _whole(SUCCESS)


def test_gzip_replay_roundtrip() -> None:
    writer = GzipWriter()
    for i in range(0, len(SUCCESS), 1000):
        writer.write(SUCCESS[i : i + 1000])
    raw = writer.finish()
    assert gzip.decompress(raw) == SUCCESS
    assert len(raw) < len(SUCCESS) // 4
    assert parse_command(gunzip_reply(raw), max_bytes=MAX) == _whole(SUCCESS)


@pytest.mark.parametrize("size", [0, 1, HOLD_BYTES - 1, HOLD_BYTES, HOLD_BYTES + 1, 5 * HOLD_BYTES])
@pytest.mark.parametrize("step", [1000, 1 << 15, 1 << 20])
def test_gzip_round_trips_bodies_held_or_streamed(size: int, step: int) -> None:
    # Small bodies are held until finished; larger ones are compressed as they stream.
    body = random.Random(size).randbytes(size)
    writer = GzipWriter()
    for i in range(0, size, step):
        writer.write(body[i : i + step])
    assert gzip.decompress(writer.finish()) == body


def test_gunzip_yields_bounded_chunks() -> None:
    big = b"<a>" + b"x" * 1_000_000 + b"</a>"
    chunks = list(gunzip_reply(gzip.compress(big)))
    assert b"".join(chunks) == big
    assert max(len(c) for c in chunks) <= 1 << 16


# -- lenient shapes -----------------------------------------------------------------------------


def test_bank_specific_fields_partial_accounts_and_cards() -> None:
    tx = (
        "<moneyTransaction><transactionOn>2023-01-02</transactionOn>"
        "<currencyAmount>-1.50</currencyAmount><title>A &amp; B</title>"
        "<variableSymbol>1234</variableSymbol><constantSymbol>0308</constantSymbol>"
        "</moneyTransaction>"
    )
    # The real shape (Kontomatik's CreditCard model): moneyTransactions, limit, cardId.
    card = (
        "<creditCard><name>Visa</name><cardId>C-1</cardId><number>4111</number>"
        "<currencyName>CZK</currencyName><currencyBalance>-10.00</currencyBalance>"
        "<limit>5000.00</limit>"
        "<moneyTransactions><moneyTransaction><bookedOn>2023-01-03</bookedOn>"
        "<currencyAmount>-10.00</currencyAmount><title>Shop</title></moneyTransaction>"
        "</moneyTransactions></creditCard>"
    )
    body = (
        '<result><accounts><account partialDueToTimeout="true"><iban>CZ1</iban>'
        '<currencyName>CZK</currencyName><directDebit available="false"/>'
        f"<moneyTransactions>{tx}</moneyTransactions></account></accounts>"
        f"<creditCards>{card}</creditCards>"
        "<owners><owner><name>Jan</name><pesel>123</pesel></owner></owners></result>"
    )
    _, command = _whole(_command_reply(body))
    assert command.result is not None
    (account,) = command.result.accounts
    assert account.partial_due_to_timeout is True
    assert account.direct_debit is False
    assert account.balance is None
    (t,) = account.transactions
    assert t.title == "A & B"
    assert t.booked_on is None
    assert t.extra == (("variableSymbol", "1234"), ("constantSymbol", "0308"))
    (c,) = command.result.credit_cards
    assert (c.name, c.number, c.currency_name) == ("Visa", "4111", "CZK")
    assert (c.balance, c.limit, c.funds_available, c.card_id) == (
        Decimal("-10.00"),
        Decimal("5000.00"),
        None,
        "C-1",
    )
    assert [(x.transaction_on, x.amount) for x in c.transactions] == [
        (date(2023, 1, 3), Decimal("-10.00"))
    ]
    assert command.result.owners[0].extra == (("pesel", "123"),)


amounts = st.decimals(
    min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False
)
titles = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=40)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.dates(), amounts, titles, st.lists(titles.filter(str.strip), max_size=3)),
        max_size=20,
    )
)
def test_transactions_roundtrip(rows: list[tuple[date, Decimal, str, list[str]]]) -> None:
    reply = ET.Element("reply", status="200 OK")
    command = ET.SubElement(reply, "command", id="1", state="successful")
    result = ET.SubElement(command, "result")
    account = ET.SubElement(ET.SubElement(result, "accounts"), "account")
    ET.SubElement(account, "iban").text = "PL1"
    transactions = ET.SubElement(account, "moneyTransactions")
    for day, amount, title, labels in rows:
        tx = ET.SubElement(transactions, "moneyTransaction")
        ET.SubElement(tx, "transactionOn").text = day.isoformat()
        ET.SubElement(tx, "currencyAmount").text = str(amount)
        ET.SubElement(tx, "title").text = title
        holder = ET.SubElement(tx, "labels")
        for label in labels:
            ET.SubElement(holder, "label").text = label
    _, parsed = _whole(ET.tostring(reply, encoding="utf-8"))
    assert parsed.result is not None
    got = parsed.result.accounts[0].transactions
    assert [(t.transaction_on, t.amount, t.title, t.labels) for t in got] == [
        (d, a, t.strip(), tuple(lb.strip() for lb in ls)) for d, a, t, ls in rows
    ]


# -- safety -------------------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<reply status="200 OK"><command id="1" state="setup">&lol3;</command></reply>"""


def test_entity_bomb_is_refused() -> None:
    with pytest.raises(RetryLaterError, match="document type") as info:
        parse_command([BOMB], max_bytes=MAX)
    assert info.value.name == "MalformedReply"


@pytest.mark.parametrize("cut", range(1, 60))
def test_doctype_split_across_chunks_is_refused(cut: int) -> None:
    with pytest.raises(RetryLaterError, match="document type"):
        parse_command([BOMB[:cut], BOMB[cut:]], max_bytes=MAX)


def test_doctype_is_refused_by_the_small_parsers() -> None:
    with pytest.raises(RetryLaterError, match="document type"):
        parse_session(BOMB)
    assert parse_error(200, BOMB).name == "MalformedReply"


def test_utf16_reply_is_refused() -> None:
    data = '<?xml version="1.0" encoding="utf-16"?><reply/>'.encode("utf-16")
    with pytest.raises(RetryLaterError, match="not UTF-8"):
        parse_command([data[:1], data[1:]], max_bytes=MAX)


def test_oversize_reply_is_refused_and_not_retried() -> None:
    with pytest.raises(UnknownApiError) as info:
        parse_command(_chunks(SUCCESS, [1000, 2000]), max_bytes=len(SUCCESS) - 1)
    assert info.value.name == "ReplyTooLarge"
    assert not isinstance(info.value, RetryLaterError)
    assert parse_command([SUCCESS], max_bytes=len(SUCCESS)) == _whole(SUCCESS)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (SUCCESS[:-40], "well-formed"),
        (b"", "no element found"),
        (b"<html>oops</html>", "no command"),
        (b"<reply><command id='1' state='setup'></reply>", "well-formed"),
        (b"<reply><command state='setup'/></reply>", "no id"),
    ],
)
def test_malformed_replies_are_retried_later(data: bytes, why: str) -> None:
    with pytest.raises(RetryLaterError, match=why) as info:
        parse_command([data], max_bytes=MAX)
    assert info.value.name == "MalformedReply"


def test_an_unknown_command_state_is_retried_later_under_its_own_name() -> None:
    with pytest.raises(RetryLaterError, match="unknown state 'exploded'") as info:
        parse_command([_command_reply("", state="exploded")], max_bytes=MAX)
    assert info.value.name == "UnknownCommandState"


def test_a_progress_that_is_not_an_integer_is_left_out() -> None:
    _, command = _whole(_command_reply("<progress><value>x</value></progress>", state="setup"))
    assert command.progress is None
    assert command.state == CommandState.SETUP


def _one_account(*transactions: str) -> bytes:
    return _command_reply(
        "<result><accounts><account><iban>PL1</iban><moneyTransactions>"
        + "".join(transactions)
        + "</moneyTransactions></account></accounts></result>"
    )


GOOD_TX = (
    "<moneyTransaction><transactionOn>2023-01-02</transactionOn>"
    "<currencyAmount>2.00</currencyAmount><title>ok</title></moneyTransaction>"
)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (
            "<moneyTransaction><transactionOn>2023-01-01</transactionOn>"
            "<currencyAmount>1,5</currencyAmount></moneyTransaction>",
            "decimal",
        ),
        (
            "<moneyTransaction><transactionOn>2023-13-01</transactionOn>"
            "<currencyAmount>1</currencyAmount></moneyTransaction>",
            "date",
        ),
        ("<moneyTransaction><title>no amount</title></moneyTransaction>", "lacks"),
    ],
)
def test_an_unreadable_transaction_is_quarantined_and_the_rest_imported(bad: str, why: str) -> None:
    _, command = _whole(_one_account(GOOD_TX, bad, GOOD_TX))
    assert command.result is not None
    (account,) = command.result.accounts
    assert [t.title for t in account.transactions] == ["ok", "ok"]
    (skipped,) = command.result.skipped
    assert skipped.path == "accounts/account[1]/moneyTransactions/moneyTransaction[2]"
    assert why in skipped.reason
    # Located and explained, never quoted: the bad value is nowhere in the record.
    assert "1,5" not in repr(skipped)
    assert "2023-13-01" not in repr(skipped)


def test_unreadable_optional_values_are_left_out_and_counted() -> None:
    tx = (
        "<moneyTransaction><transactionOn>2023-01-02</transactionOn><bookedOn>soon</bookedOn>"
        "<currencyAmount>2.00</currencyAmount><currencyBalance>n/a</currencyBalance>"
        "<title>t</title><labels><label>fine</label><label><name>nested</name></label>"
        "</labels><details><code>X1</code><note>n</note></details></moneyTransaction>"
    )
    body = (
        "<result><accounts><account><iban>PL1</iban><currencyBalance>lots</currencyBalance>"
        f"<moneyTransactions>{tx}</moneyTransactions></account></accounts></result>"
    )
    _, command = _whole(_command_reply(body))
    assert command.result is not None
    (account,) = command.result.accounts
    assert account.balance is None
    (t,) = account.transactions
    assert (t.booked_on, t.balance, t.labels) == (None, None, ("fine",))
    # An unknown nested field stays structured.
    assert t.extra == (("details", (("code", "X1"), ("note", "n"))),)
    paths = sorted(s.path for s in command.result.skipped)
    base = "accounts/account[1]/moneyTransactions/moneyTransaction[1]"
    assert paths == [
        "accounts/account[1]/currencyBalance",
        f"{base}/bookedOn",
        f"{base}/currencyBalance",
        f"{base}/labels/label[2]",
    ]


def test_a_card_shaped_like_the_sdk_model() -> None:
    card = (
        '<creditCard partialDueToTimeout="true"><cardId>77</cardId>'
        "<iban>PL10105000997603123456789123</iban><number>5100 **** **** 1234</number>"
        "<currencyBalance>-120.50</currencyBalance><currencyFundsAvailable>4879.50"
        "</currencyFundsAvailable><currencyName>PLN</currencyName><owner>Maria S</owner>"
        "<limit>5000.00</limit><interests>18.5</interests><dueDate>2023-06-15</dueDate>"
        "<owners><owner><name>Maria Sochacka</name><kind>OWNER</kind></owner></owners>"
        "<moneyTransactions>"
        "<moneyTransaction><transactionOn>2023-05-20</transactionOn><bookedOn>2023-05-21"
        "</bookedOn><currencyAmount>-20.50</currencyAmount><currencyBalance>-120.50"
        "</currencyBalance><title>Allegro</title><kind>TRANSAKCJA KARTĄ</kind>"
        "<status>DONE</status><variableSymbol>11</variableSymbol></moneyTransaction>"
        "<moneyTransaction><transactionOn>2023-05-02</transactionOn>"
        "<currencyAmount>-100.00</currencyAmount><title>Orlen</title></moneyTransaction>"
        "</moneyTransactions></creditCard>"
    )
    body = f"<result><accounts/><creditCards>{card}</creditCards></result>"
    _, command = _whole(_command_reply(body))
    assert command.result is not None
    (c,) = command.result.credit_cards
    assert c.key == "77"
    assert (c.card_id, c.iban, c.number, c.currency_name, c.owner) == (
        "77",
        "PL10105000997603123456789123",
        "5100 **** **** 1234",
        "PLN",
        "Maria S",
    )
    assert (c.balance, c.funds_available, c.limit, c.interest, c.due_date) == (
        Decimal("-120.50"),
        Decimal("4879.50"),
        Decimal("5000.00"),
        Decimal("18.5"),
        date(2023, 6, 15),
    )
    assert c.partial_due_to_timeout is True
    assert [o.name for o in c.owners] == ["Maria Sochacka"]
    assert [t.title for t in c.transactions] == ["Allegro", "Orlen"]
    assert c.transactions[0].extra == (("variableSymbol", "11"),)
    assert command.result.partial == ("77",)
    assert command.result.transaction_count == 2


def test_an_account_with_two_owner_blocks_keeps_every_owner_and_field() -> None:
    body = (
        "<result><accounts><account><iban>PL1</iban><moneyTransactions/>"
        "<owners><owner><name>Maria Sochacka</name><address>Stolarska 15/2</address>"
        "<polishPesel>85010112345</polishPesel><phone>+48600100200</phone>"
        "<email>m@example.pl</email><birthDate>1985-01-01</birthDate><kind>OWNER</kind>"
        "</owner></owners>"
        "<owners><owner><name>Tadeusz Krajowy</name><kind>CO_OWNER</kind>"
        "<personalDocument><type>ID</type><number>ABC123</number></personalDocument>"
        "</owner></owners></account></accounts></result>"
    )
    _, command = _whole(_command_reply(body))
    assert command.result is not None
    (account,) = command.result.accounts
    first, second = account.owners
    assert (first.name, first.kind, first.address) == (
        "Maria Sochacka",
        "OWNER",
        "Stolarska 15/2",
    )
    assert first.extra == (
        ("polishPesel", "85010112345"),
        ("phone", "+48600100200"),
        ("email", "m@example.pl"),
        ("birthDate", "1985-01-01"),
    )
    assert (second.name, second.kind) == ("Tadeusz Krajowy", "CO_OWNER")
    assert second.extra == (("personalDocument", (("type", "ID"), ("number", "ABC123"))),)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(SUCCESS) - 1),
    st.binary(max_size=8),
    st.integers(min_value=0, max_value=len(SUCCESS)),
)
def test_damaged_replies_parse_or_raise_a_kontomatik_error(at: int, junk: bytes, end: int) -> None:
    damaged = (SUCCESS[:at] + junk + SUCCESS[at + len(junk) :])[:end]
    # Any other exception (IndexError, ValueError...) would escape and fail the test.
    with contextlib.suppress(KontomatikError):
        _whole(damaged)


def test_a_damaged_encoding_name_is_a_malformed_reply() -> None:
    # Found by the property above: expat raises LookupError for an encoding it cannot name.
    with pytest.raises(KontomatikError) as info:
        _whole(b'<?xml version="1.0" encoding="u-f-8"?><reply status="200 OK"/>')
    assert info.value.name == "MalformedReply"


@pytest.mark.parametrize(
    "data",
    [
        b"<moneyTransaction><transactionOn>2023-01-01</transactionOn></moneyTransaction>",
        b"<account/>",
        b"<exception name='X'/>",
    ],
)
def test_odd_roots_are_malformed(data: bytes) -> None:
    with pytest.raises(RetryLaterError, match="no command"):
        parse_command([data], max_bytes=MAX)


def test_reply_level_exception_on_success_status_is_classified() -> None:
    data = (
        b'<reply status="200 OK"><exception name="InvalidSessionId">'
        b"<message>m</message></exception></reply>"
    )
    with pytest.raises(SessionDeadError) as info:
        parse_command([data], max_bytes=MAX)
    assert info.value.http_status == 200


# -- sessions and errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'<reply status="200 OK"><session id="S1" signature="SIG"/></reply>',
        b'<reply status="200 OK"><session sessionId="S1" sessionIdSignature="SIG"/></reply>',
        b"<reply><sessionId>S1</sessionId><sessionIdSignature>SIG</sessionIdSignature></reply>",
        b"<reply><session><id>S1</id><signature>SIG</signature></session></reply>",
    ],
)
def test_session_shapes(data: bytes) -> None:
    session = parse_session(data)
    assert (session.session_id, session.signature) == ("S1", "SIG")
    assert "SIG" not in repr(session)


def test_reuse_accepts_a_session_or_a_command_to_poll() -> None:
    session = parse_reuse(b'<reply status="200 OK"><session id="S1" signature="SIG"/></reply>')
    assert session == parse_session(b'<reply><session id="S1" signature="SIG"/></reply>')
    command = parse_reuse(
        b'<reply status="202 Accepted"><command id="9" state="in_progress" '
        b'name="ReuseMultipleAccessCommand"/></reply>'
    )
    assert isinstance(command, Command)
    assert (command.id, command.state) == ("9", CommandState.IN_PROGRESS)
    done = parse_reuse(
        b'<reply status="200 OK"><command id="9" state="successful"><result>'
        b'<session id="S2" signature="SIG2"/></result></command></reply>'
    )
    assert not isinstance(done, Command)
    assert done.session_id == "S2"


@pytest.mark.parametrize(
    "data",
    [
        b'<reply status="200 OK"><surprise/></reply>',
        b'<reply status="200 OK"><session id="S1"/></reply>',
        b'<reply status="200 OK"><command id="9" state="hatching"/></reply>',
        b'<reply status="200 OK"><command id="9" state="successful"/></reply>',
    ],
)
def test_reuse_of_an_unknown_shape_is_unexpected_and_not_retried(data: bytes) -> None:
    with pytest.raises(UnexpectedReplyError) as info:
        parse_reuse(data)
    assert info.value.name == "UnexpectedReply"
    assert not isinstance(info.value, RetryLaterError)
    assert info.value.raw == data


def test_reuse_cut_in_transit_is_retried_later() -> None:
    with pytest.raises(RetryLaterError, match="well-formed"):
        parse_reuse(b'<reply status="200 OK"><session id="S1" sig')


def test_session_missing_is_malformed() -> None:
    with pytest.raises(RetryLaterError, match="no session"):
        parse_session(b'<reply status="200 OK"><session id="S1"/></reply>')


def test_session_reply_with_exception_is_classified() -> None:
    data = (
        b'<reply status="400 Bad Request"><exception name="InvalidMultipleAccessId">'
        b"<message>dead</message></exception></reply>"
    )
    with pytest.raises(TokenDeadError, match="dead"):
        parse_session(data)


@pytest.mark.parametrize(
    ("name", "status", "cls"),
    [
        ("JobsQuotaExceeded", 429, JobsQuotaExceededError),
        ("ServiceMaintenance", 503, RetryLaterError),
        ("ServiceTemporarilyUnavailable", 503, RetryLaterError),
        ("MultipleAccessLimitExceeded", 400, QuotaError),
        ("InvalidMultipleAccessId", 400, TokenDeadError),
        ("SessionExpired", 404, SessionDeadError),
        ("DefaultImportAlreadyExecuted", 400, SessionDeadError),
        ("InvalidSessionIdSignature", 400, SessionDeadError),
        ("InvalidParameter", 400, UnknownApiError),
        ("SomethingNew", 500, RetryLaterError),
    ],
)
def test_each_exception_name_maps_to_its_class(
    name: str, status: int, cls: type[KontomatikError]
) -> None:
    data = f'<reply><exception name="{name}"><message>why</message></exception></reply>'.encode()
    error = parse_error(status, data)
    assert type(error) is cls
    assert (error.name, error.message, error.http_status) == (name, "why", status)


@pytest.mark.parametrize(
    ("status", "body", "cls", "name"),
    [
        (503, b"<html>busy</html>", RetryLaterError, "HttpStatus503"),
        (502, b"", RetryLaterError, "HttpStatus502"),
        (429, b"", RetryLaterError, "HttpStatus429"),
        (400, b"not xml", UnknownApiError, "HttpStatus400"),
        (302, b"", UnknownApiError, "HttpStatus302"),
        (200, b"<reply", RetryLaterError, "MalformedReply"),
        (
            400,
            b'<?xml version="1.0"?><reply status="400 Bad Request"><exc',
            RetryLaterError,
            "MalformedReply",
        ),
    ],
)
def test_errors_without_exception(
    status: int, body: bytes, cls: type[KontomatikError], name: str
) -> None:
    error = parse_error(status, body)
    assert type(error) is cls
    assert error.name == name


def test_command_path_cannot_escape() -> None:
    assert command_result("455026009") == "/v1/command/455026009.xml"
    assert command_result("../owner-scores") == "/v1/command/..%2Fowner-scores.xml"
