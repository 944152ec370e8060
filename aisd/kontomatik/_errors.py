"""The error taxonomy callers act on.

Kontomatik's list of exception names changes over time, so each error keeps the upstream name
verbatim and callers branch on the class: retry later, quota, token dead, session dead,
unauthorized, or unknown. No message here ever carries a secret.
"""

from __future__ import annotations


class KontomatikError(Exception):
    """Base of every error the client raises.

    Attributes:
        name: Kontomatik's exception name (e.g. ``InvalidSessionId``), or a local name for
            failures with no upstream name (``NetworkError``, ``Timeout``, ``HttpStatus503``,
            ``MalformedReply``, ``ReplyTooLarge``).
        message: Kontomatik's message, or a description of the local failure.
        http_status: the HTTP status of the reply, when there was one.
    """

    def __init__(self, name: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.http_status = http_status


class RetryLaterError(KontomatikError):
    """Transient: network errors, timeouts, 5xx, malformed replies, maintenance, busy upstream.

    ``sent`` is False only when the request provably never left this process (connection
    refused or failed before sending); callers may then retry without counting an access.
    """

    def __init__(
        self, name: str, message: str, *, http_status: int | None = None, sent: bool = True
    ) -> None:
        super().__init__(name, message, http_status=http_status)
        self.sent = sent


class JobsQuotaExceededError(RetryLaterError):
    """More than 8 commands running for this client: wait 10-15 s with back-off."""


class QuotaError(KontomatikError):
    """``MultipleAccessLimitExceeded``: the account's rolling 24 h access quota is used up."""


class TokenDeadError(KontomatikError):
    """``InvalidMultipleAccessId``: the token is dead; the user must sign in again."""


class SessionDeadError(KontomatikError):
    """The session cannot be used: ``InvalidSessionId``, ``SessionExpired``,
    ``DefaultImportAlreadyExecuted`` (and ``InvalidSessionIdSignature``)."""


class UnauthorizedError(KontomatikError):
    """HTTP 401: wrong API key or a caller IP that is not whitelisted."""


class UnexpectedReplyError(KontomatikError):
    """A 2xx reply of a shape aisd does not know (a Reuse Multiple Access reply with neither a
    session nor a command). Never retried blindly: the same call would spend another access
    for the same answer. ``raw`` is the reply body, kept for inspection; it is in no message.
    """

    def __init__(
        self, name: str, message: str, *, raw: bytes, http_status: int | None = None
    ) -> None:
        super().__init__(name, message, http_status=http_status)
        self.raw = raw


class UnknownApiError(KontomatikError):
    """Any other exception name, kept verbatim (``CommandNotAvailable``, ``InvalidParameter``)."""


RETRY_LATER_NAMES = frozenset(
    {"JobsQuotaExceeded", "ServiceTemporarilyUnavailable", "ServiceMaintenance"}
)
SESSION_DEAD_NAMES = frozenset(
    {
        "InvalidSessionId",
        "SessionExpired",
        "DefaultImportAlreadyExecuted",
        "InvalidSessionIdSignature",
    }
)


def classify(name: str, message: str, *, http_status: int | None = None) -> KontomatikError:
    """Map an upstream exception name to the error class callers act on."""
    if name == "JobsQuotaExceeded":
        return JobsQuotaExceededError(name, message, http_status=http_status)
    if name in RETRY_LATER_NAMES:
        return RetryLaterError(name, message, http_status=http_status)
    if name == "MultipleAccessLimitExceeded":
        return QuotaError(name, message, http_status=http_status)
    if name == "InvalidMultipleAccessId":
        return TokenDeadError(name, message, http_status=http_status)
    if name in SESSION_DEAD_NAMES:
        return SessionDeadError(name, message, http_status=http_status)
    return UnknownApiError(name, message, http_status=http_status)
