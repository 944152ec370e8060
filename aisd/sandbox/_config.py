"""The sandbox's knobs, its errors and the HTTP status each error travels with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_API_KEY = "sandbox-key"  # documented: `aisd sandbox` uses it unless AISD_API_KEY is set
DEFAULT_TARGET = "KontoBank"  # the test environment's mock bank
# Shapes of a Reuse Multiple Access reply (SandboxConfig.reuse_shape).
REUSE_SESSION = "session"
REUSE_COMMAND = "command"
REUSE_GARBAGE = "garbage"

# HTTP status of each exception name. Kontomatik documents InvalidSessionId (404); the others
# are guesses [U], kept here so one edit changes them: rate limits as 429, dead tokens as 404
# like dead sessions, everything about a malformed or refused request as 400.
ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "InvalidParameter": 400,
        "InvalidSessionId": 404,
        "InvalidSessionIdSignature": 400,
        "DefaultImportAlreadyExecuted": 400,
        "InvalidCommandId": 404,
        "JobsQuotaExceeded": 429,
        "MultipleAccessLimitExceeded": 429,
        "InvalidMultipleAccessId": 404,
        "NoDataToCalculateScore": 404,
        "NotFound": 404,
        "MethodNotAllowed": 405,
    }
)


class ApiError(Exception):
    """A refusal the sandbox answers with an ``<exception>`` envelope.

    Messages never carry a session signature, a token or the API key.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message

    @property
    def status(self) -> int:
        """The HTTP status this error is sent with."""
        return ERROR_STATUS.get(self.name, 400)


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes the sandbox's behaviour; replace it at runtime with ``replace``.

    Attributes:
        api_key: the only ``X-Api-Key`` accepted.
        command_seconds: how long a Default Import stays in ``setup``/``in_progress``.
        command_seconds_by_owner: per-``ownerExternalId`` override of ``command_seconds``.
        seed: drives the bank data, the ids and the fault draws.
        accounts_per_owner: accounts of a consent minted without an explicit account list.
        session_ttl_seconds: a session unused this long after creation is expired.
        token_days: validity of a ``multipleAccessId`` from consent.
        max_running_commands: the per-client pool of running commands.
        reuses_per_day: Reuse Multiple Access per bank account in any rolling 24 h.
        reuse_history_days: history a session made by reuse returns.
        latency_seconds: added before every API reply.
        rate_5xx: share of API requests answered by a bare 5xx, unprocessed.
        rate_timeout: share of API requests processed but answered only after
            ``timeout_fault_seconds`` (past any sane client timeout), with a 504.
        timeout_fault_seconds: how long a timed-out request hangs.
        rate_malformed: share of API requests processed but answered with truncated XML.
        rate_jobs_quota: share of Default Imports and reuses refused by a spurious
            ``JobsQuotaExceeded``.
        rate_access_limit: share of reuses refused by a spurious ``MultipleAccessLimitExceeded``
            (another company used the account's quota); they count like any other reuse.
        rate_import_error: share of Default Imports that end in state ``error``.
        co_owner_rate: share of owners whose accounts have a co-owner too.
        owner_personal_fields: owners carry the personal fields some banks send
            (``polishPesel``, ``phone``, ``email``, ``birthDate``, ``citizenship``).
        split_owner_blocks: an account lists each of its owners in an ``<owners>`` block of
            its own (owner and co-owner), as some banks do.
        cards_per_owner: credit cards each owner has, with their own transactions.
        partial_days: when set, every account and card of a Default Import comes back cut
            short (``partialDueToTimeout="true"``) with only its last ``partial_days`` days.
        owner_echo_by_owner: the ``ownerExternalId`` echoed for an owner's imports instead of
            its own: what the widget was given (``kontomatik-<uuid>`` when it was given none).
        reuse_shape: how Reuse Multiple Access answers: ``session`` (the session itself),
            ``command`` (a command to poll until it yields the session) or ``garbage`` (a
            well-formed reply of no known shape; the access still counts).
        score_unimported_owners: owner scores are served for any owner; when False an owner
            with no successful import gets ``NoDataToCalculateScore``, as upstream does.
    """

    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    command_seconds: float = 8.0
    command_seconds_by_owner: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )
    seed: int = 0
    accounts_per_owner: int = 2
    session_ttl_seconds: float = 30 * 60
    token_days: int = 180
    max_running_commands: int = 8
    reuses_per_day: int = 4
    reuse_history_days: int = 90
    latency_seconds: float = 0.0
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    timeout_fault_seconds: float = 120.0
    rate_malformed: float = 0.0
    rate_jobs_quota: float = 0.0
    rate_access_limit: float = 0.0
    rate_import_error: float = 0.0
    co_owner_rate: float = 0.3
    owner_personal_fields: bool = False
    split_owner_blocks: bool = False
    cards_per_owner: int = 0
    partial_days: int | None = None
    owner_echo_by_owner: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    reuse_shape: str = REUSE_SESSION
    score_unimported_owners: bool = True

    def owner_echo(self, owner_external_id: str) -> str:
        """The ``ownerExternalId`` Kontomatik echoes for ``owner_external_id``'s imports."""
        return self.owner_echo_by_owner.get(owner_external_id, owner_external_id)

    def command_seconds_for(self, owner_external_id: str) -> float:
        """The duration of a command run for ``owner_external_id``."""
        return self.command_seconds_by_owner.get(owner_external_id, self.command_seconds)
