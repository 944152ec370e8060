"""The Kontomatik API: an async client, its reply values, its error taxonomy and its parsers.

``KontomatikClient`` is the only part that does I/O; the parsers are pure and also serve
replay (``parse_command(gunzip_reply(raw), max_bytes=...)`` re-reads a kept reply).
"""

from __future__ import annotations

from aisd.kontomatik._client import KontomatikClient
from aisd.kontomatik._errors import (
    JobsQuotaExceededError,
    KontomatikError,
    QuotaError,
    RetryLaterError,
    SessionDeadError,
    TokenDeadError,
    UnauthorizedError,
    UnexpectedReplyError,
    UnknownApiError,
    classify,
)
from aisd.kontomatik._gzip import gunzip_reply
from aisd.kontomatik._models import (
    Account,
    Command,
    CommandFailure,
    CommandState,
    CreditCard,
    ImportReply,
    ImportResult,
    ModelScore,
    MoneyTransaction,
    Owner,
    ReplyMeta,
    Session,
    Skipped,
)
from aisd.kontomatik._parse import (
    parse_command,
    parse_data_reply,
    parse_error,
    parse_owner_scores,
    parse_reuse,
    parse_session,
)

__all__ = [
    "Account",
    "Command",
    "CommandFailure",
    "CommandState",
    "CreditCard",
    "ImportReply",
    "ImportResult",
    "JobsQuotaExceededError",
    "KontomatikClient",
    "KontomatikError",
    "ModelScore",
    "MoneyTransaction",
    "Owner",
    "QuotaError",
    "ReplyMeta",
    "RetryLaterError",
    "Session",
    "SessionDeadError",
    "Skipped",
    "TokenDeadError",
    "UnauthorizedError",
    "UnexpectedReplyError",
    "UnknownApiError",
    "classify",
    "gunzip_reply",
    "parse_command",
    "parse_data_reply",
    "parse_error",
    "parse_owner_scores",
    "parse_reuse",
    "parse_session",
]
