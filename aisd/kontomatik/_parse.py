"""Kontomatik's XML replies, parsed into typed values.

Command and data replies may hold 100,000 transactions, so they are read incrementally: bytes go
through a ``ByteGuard`` (size limit, no DTD) into an ``XMLPullParser``, and every finished
transaction, account and credit card is converted and then cut out of the tree, so neither the
whole tree nor the whole body is ever held. Small replies (sessions, errors, scores) are parsed in
one go behind the same guard.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import Literal, cast

from aisd.kontomatik import _elements as el
from aisd.kontomatik._errors import (
    KontomatikError,
    RetryLaterError,
    UnauthorizedError,
    UnexpectedReplyError,
    UnknownApiError,
    classify,
)
from aisd.kontomatik._guard import ByteGuard, malformed
from aisd.kontomatik._models import (
    Account,
    Command,
    CommandState,
    CreditCard,
    ImportResult,
    ModelScore,
    MoneyTransaction,
    Owner,
    ReplyMeta,
    Session,
    Skipped,
)

# Error envelopes are a few hundred bytes; this only bounds what a broken server could send.
SMALL_REPLY_MAX_BYTES = 1 << 20
_TRANSACTION_TAG = "moneyTransaction"
# Parents of the result-wide owners list (command replies, data replies).
_RESULT_TAGS = frozenset({"result", "target"})
_EVENTS: tuple[Literal["start"], Literal["end"]] = ("start", "end")
# Only start and end events are requested, and both carry an element.
_Events = Iterator[tuple[str, ET.Element]]


class ReplyReader:
    """Incremental reader of a command reply (Default Import, Get Import Result) or a data reply.

    Feed the body chunk by chunk, then call ``close``. The reader keeps only what is not yet
    converted: at most one unfinished transaction or account subtree at a time.

    Args:
        max_bytes: the largest body accepted (``ReplyTooLarge`` beyond it).
    """

    __slots__ = (
        "_accounts",
        "_cards",
        "_commands",
        "_guard",
        "_owners",
        "_parser",
        "_result_seen",
        "_root",
        "_skipped",
        "_skipped_here",
        "_stack",
        "_top_exception",
        "_transactions",
    )

    def __init__(self, *, max_bytes: int) -> None:
        self._guard = ByteGuard(max_bytes)
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(_EVENTS)
        self._stack: list[ET.Element] = []
        self._root: ET.Element | None = None
        self._transactions: list[MoneyTransaction] = []
        self._accounts: list[Account] = []
        self._cards: list[CreditCard] = []
        self._owners: list[Owner] = []
        self._commands: list[ET.Element] = []
        self._result_seen = False
        self._top_exception: ET.Element | None = None
        self._skipped: list[Skipped] = []
        # Transactions of the current account or card left out (for the next one's index).
        self._skipped_here = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body.

        Raises:
            KontomatikError: ``ReplyTooLarge``, ``MalformedReply`` (bad XML, a DTD, a value
                that cannot be read).
        """
        self._guard.check(chunk)
        # XMLPullParser reports syntax errors from read_events as well as from feed.
        try:
            self._parser.feed(chunk)
            self._drain()
        except ET.ParseError as exc:
            raise malformed(f"reply is not well-formed XML ({exc})") from None
        except LookupError:
            # expat looks the declared encoding up by name; a damaged name is no codec.
            raise malformed("reply declares an unknown encoding") from None

    def close(self) -> ReplyMeta:
        """End the body and return the root's attributes.

        Raises:
            KontomatikError: ``MalformedReply`` for a truncated or empty body.
        """
        try:
            self._parser.close()
            self._drain()
        except ET.ParseError as exc:
            raise malformed(f"reply is not well-formed XML ({exc})") from None
        # A well-formed document has a root, so close() has seen its start event.
        assert self._root is not None
        return el.reply_meta(self._root)

    def command(self, meta: ReplyMeta) -> Command:
        """The command of a closed command reply.

        Raises:
            KontomatikError: the reply carries an exception instead of a command (classified
                by name), or no command at all (``MalformedReply``).
        """
        if not self._commands:
            self.raise_for_exception(meta)
            raise malformed("reply holds no command")
        element = self._commands[0]
        attrib = element.attrib
        raw_state = attrib.get("state", "")
        try:
            state = CommandState(raw_state)
        except ValueError:
            # Polled on within the poll rules (a retry-later error), then failed by this name.
            raise RetryLaterError(
                "UnknownCommandState", f"command has an unknown state {raw_state[:40]!r}"
            ) from None
        command_id = attrib.get("id")
        if not command_id:
            raise malformed("command has no id")
        exception = element.find("exception")
        return Command(
            id=command_id,
            state=state,
            name=attrib.get("name"),
            target=attrib.get("target"),
            progress=el.progress(element),
            owner_external_id=meta.owner_external_id,
            result=self.result() if self._result_seen else None,
            failure=None if exception is None else el.failure(exception),
        )

    def command_state(self) -> CommandState | None:
        """The command's state as soon as its start tag has been read (before its result), or
        None while it is not (or is not a known state): lets a caller act on a final state
        while the rest of a large body is still being read."""
        stack = self._stack
        if len(stack) >= 2 and stack[1].tag == "command":
            element = stack[1]
        elif self._commands:
            element = self._commands[0]
        else:
            return None
        try:
            return CommandState(element.attrib.get("state", ""))
        except ValueError:
            return None

    def result(self) -> ImportResult:
        """Owners, accounts and credit cards read so far, over every ``result`` or ``target``."""
        return ImportResult(
            owners=tuple(self._owners),
            accounts=tuple(self._accounts),
            credit_cards=tuple(self._cards),
            skipped=tuple(self._skipped),
        )

    def raise_for_exception(self, meta: ReplyMeta) -> None:
        """Raise the classified error of a reply-level ``exception``, if there is one."""
        if self._top_exception is not None:
            failure = el.failure(self._top_exception)
            raise classify(failure.name, failure.message, http_status=_status_code(meta.status))

    def _drain(self) -> None:
        # The hot loop: one iteration per element start and end, so it stays minimal.
        stack = self._stack
        for event, element in cast(_Events, self._parser.read_events()):
            if event == "start":
                if self._root is None:
                    self._root = element
                stack.append(element)
                continue
            stack.pop()
            if not stack:
                continue  # the root ended: everything in it was handled on the way
            tag = element.tag
            if tag == _TRANSACTION_TAG:
                self._transaction(element)
                stack[-1].remove(element)
            elif tag == "account":
                skip = self._skipper(f"accounts/account[{len(self._accounts) + 1}]")
                self._accounts.append(el.account(element, self._transactions, skip))
                self._container_done()
                stack[-1].remove(element)
            elif tag == "creditCard":
                skip = self._skipper(f"creditCards/creditCard[{len(self._cards) + 1}]")
                self._cards.append(el.credit_card(element, self._transactions, skip))
                self._container_done()
                stack[-1].remove(element)
            elif tag == "owners" and stack[-1].tag in _RESULT_TAGS:
                self._owners.extend(el.owners(element))
            elif tag in _RESULT_TAGS:
                self._result_seen = True
            elif tag == "command":
                self._commands.append(element)
            elif tag == "exception" and len(stack) == 1:
                self._top_exception = element

    def _transaction(self, element: ET.Element) -> None:
        """Convert one transaction, or quarantine it (counted, located, never its values)."""
        try:
            tx = el.money_transaction(element, self._skip_in_transaction)
        except KontomatikError as exc:
            self._skipped.append(Skipped(self._transaction_path(), exc.message))
            self._skipped_here += 1
            return
        self._transactions.append(tx)

    def _transaction_path(self) -> str:
        """Where the transaction being converted is (built only when something is skipped)."""
        stack = self._stack
        container = stack[-2].tag if len(stack) >= 2 else "?"
        if container == "account":
            where = f"accounts/account[{len(self._accounts) + 1}]"
        elif container == "creditCard":
            where = f"creditCards/creditCard[{len(self._cards) + 1}]"
        else:
            where = container
        index = len(self._transactions) + self._skipped_here + 1
        return f"{where}/moneyTransactions/moneyTransaction[{index}]"

    def _skip_in_transaction(self, path: str, reason: str) -> None:
        self._skipped.append(Skipped(f"{self._transaction_path()}/{path}", reason))

    def _skipper(self, base: str) -> el.Skip:
        def skip(path: str, reason: str) -> None:
            self._skipped.append(Skipped(f"{base}/{path}", reason))

        return skip

    def _container_done(self) -> None:
        self._transactions = []
        self._skipped_here = 0


def parse_command(chunks: Iterable[bytes], *, max_bytes: int) -> tuple[ReplyMeta, Command]:
    """Parse a Default Import or Get Import Result reply, incrementally.

    Args:
        chunks: the reply body, in chunks of any size (``[body]`` for a whole body).
        max_bytes: the largest body accepted.

    Returns:
        The root's attributes and the command, with its result when it has one and its
        failure when it ended ``error`` or ``fatal``.

    Raises:
        RetryLaterError: ``MalformedReply`` (bad XML, a DTD, an unreadable value, no command).
        UnknownApiError: ``ReplyTooLarge``.
        KontomatikError: the classified error of a reply-level ``exception``.
    """
    reader = ReplyReader(max_bytes=max_bytes)
    for chunk in chunks:
        reader.feed(chunk)
    meta = reader.close()
    return meta, reader.command(meta)


def parse_data_reply(chunks: Iterable[bytes], *, max_bytes: int) -> ImportResult:
    """Parse an aggregated data reply (``/v1/data.xml``): owners and accounts of every target.

    Args:
        chunks: the reply body, in chunks of any size.
        max_bytes: the largest body accepted.

    Raises:
        KontomatikError: as ``parse_command``.
    """
    reader = ReplyReader(max_bytes=max_bytes)
    for chunk in chunks:
        reader.feed(chunk)
    reader.raise_for_exception(reader.close())
    return reader.result()


def parse_session(data: bytes) -> Session:
    """Parse a Reuse Multiple Access reply into the fresh session it grants.

    The shape is uncertain, so ``<session id= signature=/>``, ``<session sessionId=
    sessionIdSignature=/>`` and ``sessionId``/``sessionIdSignature`` child elements are accepted.

    Raises:
        RetryLaterError: ``MalformedReply`` when no session can be found.
        KontomatikError: the classified error of an ``exception`` in the reply.
    """
    root = _parse_small(data)
    _raise_exception_in(root)
    for candidate in (root, *root.iter("session")):
        session = _session_in(candidate)
        if session is not None:
            return session
    raise malformed("reply holds no session")


def parse_reuse(data: bytes) -> Session | Command:
    """Parse a Reuse Multiple Access reply (or a poll of the command it started).

    Two shapes are plausible and both are accepted: the fresh session itself (any shape
    ``parse_session`` knows), or a command to poll until it yields the session.

    Returns:
        The session, or the command (with its id and state) to poll.

    Raises:
        RetryLaterError: ``MalformedReply``, the body is not well-formed XML (cut in transit).
        UnexpectedReplyError: well-formed XML holding neither a session nor a command, or a
            command in a state aisd does not know, or one that succeeded without a session.
        KontomatikError: the classified error of an ``exception`` in the reply (a failed
            command's included).
    """
    root = _parse_small(data)
    _raise_exception_in(root)
    for candidate in (root, *root.iter("session")):
        session = _session_in(candidate)
        if session is not None:
            return session
    element = next(root.iter("command"), None)
    if element is not None and element.get("id"):
        try:
            state = CommandState(element.get("state", ""))
        except ValueError:
            state = None
        if state is not None and state is not CommandState.SUCCESSFUL:
            return Command(id=element.get("id", ""), state=state, name=element.get("name"))
    raise UnexpectedReplyError(
        "UnexpectedReply",
        "the Reuse Multiple Access reply holds neither a session nor a command to poll",
        raw=data,
    )


def parse_owner_scores(data: bytes) -> list[ModelScore]:
    """Parse an owner-scores reply: one score per model.

    Raises:
        RetryLaterError: ``MalformedReply``.
        KontomatikError: the classified error of an ``exception`` in the reply.
    """
    root = _parse_small(data)
    _raise_exception_in(root)
    return [el.model_score(model) for model in root.iter("model")]


def parse_error(status_code: int, data: bytes) -> KontomatikError:
    """The error a non-2xx reply stands for.

    401 is always ``UnauthorizedError`` (its ``<comment>`` echoes part of the key, so it is not
    kept). Otherwise an ``exception`` element is classified by name; a 5xx whose name is not
    known to be anything else is retried later. Without an exception: 5xx and 429 are
    ``HttpStatusNNN`` retry-later errors, other statuses ``HttpStatusNNN`` unknown errors, and
    a Kontomatik reply cut short (any status) is a retry-later ``MalformedReply``.

    Args:
        status_code: the HTTP status.
        data: the reply body (possibly empty or not XML).
    """
    if status_code == 401:
        return UnauthorizedError(
            "Unauthorized",
            "API key refused or caller IP not whitelisted",
            http_status=status_code,
        )
    try:
        root: ET.Element | None = _parse_small(data)
    except KontomatikError:
        root = None
    exception = None if root is None else root.find(".//exception")
    if exception is not None:
        failure = el.failure(exception)
        error = classify(failure.name, failure.message, http_status=status_code)
        if status_code >= 500 and type(error) is UnknownApiError:
            return RetryLaterError(failure.name, failure.message, http_status=status_code)
        return error
    name = f"HttpStatus{status_code}"
    if status_code >= 500 or status_code == 429:
        return RetryLaterError(
            name, f"HTTP {status_code} without a Kontomatik exception", http_status=status_code
        )
    truncated = root is None and data.lstrip().startswith((b"<?xml", b"<reply"))
    if 200 <= status_code < 300 or truncated:
        # A Kontomatik reply cut or mangled in transit: what it said is unknown, so it is
        # retried, never taken as a final answer.
        return RetryLaterError(
            "MalformedReply", "reply is not the expected XML", http_status=status_code
        )
    return UnknownApiError(
        name, f"HTTP {status_code} without a Kontomatik exception", http_status=status_code
    )


def _session_in(element: ET.Element) -> Session | None:
    attrib = element.attrib
    own = element.tag == "session"
    session_id = (
        (attrib.get("id") if own else None)
        or attrib.get("sessionId")
        or el.text(element.find("sessionId"))
        or (el.text(element.find("id")) if own else None)
    )
    signature = (
        (attrib.get("signature") if own else None)
        or attrib.get("sessionIdSignature")
        or el.text(element.find("sessionIdSignature"))
        or (el.text(element.find("signature")) if own else None)
    )
    if session_id and signature:
        return Session(session_id=session_id, signature=signature)
    return None


def _parse_small(data: bytes) -> ET.Element:
    ByteGuard(SMALL_REPLY_MAX_BYTES).check(data)
    try:
        return ET.fromstring(data)  # noqa: S314 - the guard has refused DTDs and entities
    except ET.ParseError as exc:
        raise malformed(f"reply is not well-formed XML ({exc})") from None


def _raise_exception_in(root: ET.Element) -> None:
    exception = root.find(".//exception")
    if exception is not None:
        failure = el.failure(exception)
        raise classify(
            failure.name, failure.message, http_status=_status_code(root.get("status", ""))
        )


def _status_code(status: str) -> int | None:
    code = status.split(" ", 1)[0]
    return int(code) if code.isdigit() else None
