"""The sandbox's state and every rule Kontomatik enforces, without any HTTP.

All methods are synchronous: under one event loop each call checks and mutates the state
atomically, as the provider's own bookkeeping would. Given a ``state_path``, every change is
saved there and a new ``Sandbox`` on the same path carries on where the last one stopped; ids
are drawn from fresh entropy either way, so no two runs hand out the same session, token or
command id.
"""

from __future__ import annotations

import enum
import hmac
import math
import random
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aisd.kontomatik._models import (
    Account,
    Command,
    CommandFailure,
    CommandState,
    CreditCard,
    ImportResult,
)
from aisd.sandbox import _data, _persist
from aisd.sandbox._config import DEFAULT_TARGET, ApiError, SandboxConfig

_DEFAULT_IMPORT = "DefaultImportCommand"
_Holder = TypeVar("_Holder", Account, CreditCard)
_SESSION_EXPIRED = "Session expired."
# The knobs tests turn at run time (``set_faults``); they are saved with the state.
FAULT_KNOBS = (
    *(f.name for f in fields(SandboxConfig) if f.name.startswith("rate_")),
    "latency_seconds",
)


class Fault(enum.Enum):
    """A transport fault the HTTP layer plays instead of (or after) the real reply."""

    SERVER_ERROR = "server_error"  # bare 5xx, request not processed
    TIMEOUT = "timeout"  # processed, reply withheld past the client's timeout
    MALFORMED = "malformed"  # processed, reply truncated


@dataclass(frozen=True, slots=True)
class MintedConsent:
    """A session the sandbox handed out: by Mock Session (a consent) or by a reuse.

    ``multiple_access_id`` is the token, present only for a consent with multiple access.
    """

    owner_external_id: str
    session_id: str
    signature: str = field(repr=False)
    multiple_access_id: str | None = field(repr=False)
    ibans: tuple[str, ...]
    target: str = DEFAULT_TARGET


@dataclass(frozen=True, slots=True)
class ServedImport:
    """What one Default Import returned, for tests to compare with what the client stored."""

    command_id: str
    session_id: str
    owner_external_id: str
    as_of: datetime
    since: date
    result: ImportResult


@dataclass(slots=True)
class SandboxStats:
    """Counters end-to-end tests read.

    Attributes:
        imports_by_session: Default Import requests naming each known session (any outcome).
        reuses_by_account: times of every Reuse Multiple Access that reached each IBAN.
        max_running: the most commands running at once so far.
        commands_created: Default Import commands accepted.
        served: every successful import's result, in completion order.
        polls_by_command: when each Get Import Result arrived, per command id.
    """

    imports_by_session: dict[str, int] = field(default_factory=dict)
    reuses_by_account: dict[str, list[datetime]] = field(default_factory=dict)
    max_running: int = 0
    commands_created: int = 0
    served: list[ServedImport] = field(default_factory=list)
    polls_by_command: dict[str, list[datetime]] = field(default_factory=dict)


@dataclass(slots=True)
class _Session:
    consent: MintedConsent
    created_at: datetime
    history_days: int | None  # None: the consent's own session, full history
    command_id: str | None = None


@dataclass(slots=True)
class _Token:
    owner_external_id: str
    ibans: tuple[str, ...]
    target: str
    expires_at: datetime
    dead: bool = False  # revoked by the client, the user or the bank


@dataclass(slots=True)
class _Command:
    id: str
    session_id: str
    owner_external_id: str
    target: str
    created_at: datetime
    finishes_at: datetime
    since: date
    failure: CommandFailure | None
    result: ImportResult | None = None

    def running(self, now: datetime) -> bool:
        return now < self.finishes_at


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sandbox:
    """An in-memory imitation of Kontomatik's API state and rules.

    Args:
        config: the knobs; replace ``sandbox.config`` at runtime to change them.
        clock: returns the current UTC-aware time; inject one so tests need not sleep.
            :meth:`advance` moves the sandbox's own time ahead of it.
        state_path: a file to keep the state in across runs (created when missing).

    Raises:
        ValueError: ``state_path`` holds something other than a sandbox state.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        state_path: Path | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self._base_clock = clock
        self.offset = timedelta()
        self.stats = SandboxStats()
        # The data stays seeded; ids come from fresh entropy so that runs never share one.
        self._ids = random.Random(secrets.randbits(128))
        self._faults = random.Random(f"faults:{self.config.seed}")
        self._next_command = self._ids.randrange(10**9, 9 * 10**9)
        self._sessions: dict[str, _Session] = {}
        self._tokens: dict[str, _Token] = {}
        self._commands: dict[str, _Command] = {}
        # The commands that may still run, pruned as they end (the clock only moves forward):
        # counting them costs the few running, not every command ever made.
        self._live: dict[str, _Command] = {}
        # Command-shaped Reuse Multiple Access: the session each command yields, and when.
        self._reuse_commands: dict[str, tuple[MintedConsent, datetime]] = {}
        self._state_path = state_path
        if state_path is not None:
            saved = _persist.read(state_path)
            if saved is not None:
                self._restore(saved)

    def clock(self) -> datetime:
        """The sandbox's time: the injected clock plus every :meth:`advance` so far."""
        return self._base_clock() + self.offset

    # -- controls for tests and demos ----------------------------------------------------

    def advance(self, delta: timedelta) -> datetime:
        """Move the sandbox's time forward: new transactions appear, pending ones book,
        sessions and tokens age. Returns the new time.

        Raises:
            ValueError: ``delta`` is not positive (time never goes back).
        """
        if delta <= timedelta():
            raise ValueError("the sandbox clock only moves forward")
        self.offset += delta
        self._save()
        return self.clock()

    def set_faults(self, rates: Mapping[str, float]) -> None:
        """Change fault knobs (``rate_*`` shares from 0 to 1, ``latency_seconds`` up to 60).

        Raises:
            ValueError: an unknown knob or a value out of range; nothing is changed.
        """
        for name, value in rates.items():
            limit = 60.0 if name == "latency_seconds" else 1.0
            if name not in FAULT_KNOBS:
                raise ValueError(f"unknown fault knob {name!r}")
            if not (math.isfinite(value) and 0 <= value <= limit):
                raise ValueError(f"{name} must be between 0 and {limit:g}")
        changes: dict[str, Any] = dict(rates)
        self.config = replace(self.config, **changes)
        self._save()

    def faults(self) -> dict[str, float]:
        """The fault knobs now."""
        return {name: float(getattr(self.config, name)) for name in FAULT_KNOBS}

    def kill_tokens(self, owner_external_id: str) -> int:
        """The bank or the user revoked every live token of an owner: their reuses fail with
        ``InvalidMultipleAccessId``. Returns how many tokens died."""
        killed = 0
        for token in self._tokens.values():
            if token.owner_external_id == owner_external_id and not token.dead:
                token.dead = True
                killed += 1
        self._save()
        return killed

    def summary(self) -> dict[str, Any]:
        """What the sandbox holds now, for ``aisd sandbox-ctl status``."""
        now = self.clock()
        return {
            "now": now.isoformat(),
            "offsetSeconds": self.offset.total_seconds(),
            "sessions": len(self._sessions),
            "tokens": sum(1 for t in self._tokens.values() if not t.dead),
            "deadTokens": sum(1 for t in self._tokens.values() if t.dead),
            "runningCommands": self.running_commands(),
            "faults": self.faults(),
            "statePath": str(self._state_path) if self._state_path else None,
        }

    def records(self) -> dict[str, Any]:
        """What the sandbox has seen since it started (:class:`SandboxStats`), as JSON, for
        tests that run it as a process of its own (``aisd sandbox-ctl --url URL stats``)."""
        stats = self.stats
        return {
            "importsBySession": dict(stats.imports_by_session),
            "commandsCreated": stats.commands_created,
            "maxRunning": stats.max_running,
            "runningCommands": self.running_commands(),
            "reusesByAccount": {
                iban: [t.isoformat() for t in times]
                for iban, times in stats.reuses_by_account.items()
            },
            "pollsByCommand": {
                command: [t.isoformat() for t in times]
                for command, times in stats.polls_by_command.items()
            },
        }

    # -- Python-level helpers for tests --------------------------------------------------

    def mint_consent(
        self,
        owner_external_id: str,
        *,
        multiple_access: bool = True,
        accounts: int | Sequence[str] | None = None,
        target: str = DEFAULT_TARGET,
    ) -> MintedConsent:
        """What the SignIn widget hands over: a fresh session and, optionally, a token.

        Args:
            owner_external_id: the integrator's id of the user.
            multiple_access: whether the user granted repeated access (a token is made).
            accounts: how many accounts to generate, or the IBANs to use (accounts shared
                between owners share their quota); default ``config.accounts_per_owner``.
            target: the bank.
        """
        now = self.clock()
        if accounts is None:
            accounts = self.config.accounts_per_owner
        if isinstance(accounts, int):
            seed = self.config.seed
            ibans = tuple(_data.make_iban(seed, owner_external_id, i) for i in range(accounts))
        else:
            ibans = tuple(accounts)
        token_id: str | None = None
        if multiple_access:
            token_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
            self._tokens[token_id] = _Token(
                owner_external_id=owner_external_id,
                ibans=ibans,
                target=target,
                expires_at=now + timedelta(days=self.config.token_days),
            )
        minted = self._new_session(owner_external_id, ibans, target, token_id, None, now)
        self._save()
        return minted

    def kill_token(self, multiple_access_id: str) -> None:
        """The bank or the user revoked the token: reuses fail with InvalidMultipleAccessId."""
        self._tokens[multiple_access_id].dead = True
        self._save()

    def running_commands(self) -> int:
        """Commands running now."""
        return self._running(self.clock())

    # -- the API -------------------------------------------------------------------------

    def authorized(self, api_key: str | None) -> bool:
        """Whether ``api_key`` is the sandbox's key (compared in constant time)."""
        return api_key is not None and _same(api_key, self.config.api_key)

    def draw_fault(self) -> Fault | None:
        """The transport fault to play on this request, drawn from the seeded RNG."""
        draw = self._faults.random()
        config = self.config
        for fault, rate in (
            (Fault.SERVER_ERROR, config.rate_5xx),
            (Fault.TIMEOUT, config.rate_timeout),
            (Fault.MALFORMED, config.rate_malformed),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return None

    def default_import(self, session_id: str, signature: str, since: date) -> Command:
        """Start a Default Import on a session: the command in state ``setup``."""
        now = self.clock()
        session = self._sessions.get(session_id)
        if session is None:
            raise ApiError("InvalidSessionId", _SESSION_EXPIRED)
        counts = self.stats.imports_by_session
        counts[session_id] = counts.get(session_id, 0) + 1
        if self._session_over(session, now):
            raise ApiError("InvalidSessionId", _SESSION_EXPIRED)
        if not _same(signature, session.consent.signature):
            raise ApiError("InvalidSessionIdSignature", "Session signature does not match.")
        if session.command_id is not None:
            raise ApiError(
                "DefaultImportAlreadyExecuted", "Default import was already run on this session."
            )
        self._take_slot(now)
        consent = session.consent
        effective_since = since
        if session.history_days is not None:
            effective_since = max(since, now.date() - timedelta(days=session.history_days))
        failure = None
        if self._chance(self.config.rate_import_error):
            failure = CommandFailure(
                "ServiceTemporarilyUnavailable", "The bank did not answer; try again later."
            )
        command = _Command(
            id=str(self._next_command),
            session_id=session_id,
            owner_external_id=consent.owner_external_id,
            target=consent.target,
            created_at=now,
            finishes_at=now
            + timedelta(seconds=self.config.command_seconds_for(consent.owner_external_id)),
            since=effective_since,
            failure=failure,
        )
        self._next_command += 1
        self._commands[command.id] = command
        self._live[command.id] = command
        session.command_id = command.id
        self.stats.commands_created += 1
        self.stats.max_running = max(self.stats.max_running, self.running_commands())
        self._save()
        return self._view(command, now)

    def get_command(self, command_id: str) -> Command:
        """Get Import Result: the command's state now, with its result once successful."""
        command = self._commands.get(command_id)
        if command is None:
            raise ApiError("InvalidCommandId", f"Command {command_id} does not exist.")
        now = self.clock()
        self.stats.polls_by_command.setdefault(command_id, []).append(now)
        return self._view(command, now)

    def reuse(self, multiple_access_id: str) -> MintedConsent:
        """Reuse Multiple Access: a new session on the token's accounts.

        Every reuse of a known token counts against each of its accounts, whatever its
        outcome. A reuse needs a free slot in the command pool but holds none afterwards.
        """
        now = self.clock()
        token = self._tokens.get(multiple_access_id)
        if token is None:
            raise ApiError("InvalidMultipleAccessId", "Multiple access id is not valid.")
        window_start = now - timedelta(days=1)
        over_limit = False
        for iban in token.ibans:
            times = self.stats.reuses_by_account.setdefault(iban, [])
            times.append(now)
            over_limit = (
                over_limit or _count_after(times, window_start) > self.config.reuses_per_day
            )
        # Counted whatever the outcome, so saved before any refusal.
        self._save()
        if token.dead or now >= token.expires_at:
            raise ApiError("InvalidMultipleAccessId", "Multiple access id is not valid.")
        if over_limit or self._chance(self.config.rate_access_limit):
            raise ApiError(
                "MultipleAccessLimitExceeded",
                "The limit of accesses to this bank account in 24 hours was reached.",
            )
        self._take_slot(now)
        session = self._new_session(
            token.owner_external_id,
            token.ibans,
            token.target,
            None,
            self.config.reuse_history_days,
            now,
        )
        self._save()
        return session

    def park_reuse(self, session: MintedConsent) -> str:
        """Hold a reused session behind a command (``reuse_shape="command"``): polling the
        command yields it after a short while; returns the command id."""
        command_id = str(self._next_command)
        self._next_command += 1
        ready_at = self.clock() + timedelta(seconds=min(1.0, self.config.command_seconds / 4))
        self._reuse_commands[command_id] = (session, ready_at)
        return command_id

    def reuse_command(self, command_id: str) -> tuple[MintedConsent, bool] | None:
        """A parked reuse: its session and whether the command has yielded it yet."""
        parked = self._reuse_commands.get(command_id)
        if parked is None:
            return None
        session, ready_at = parked
        return session, self.clock() >= ready_at

    def has_imported(self, owner_external_id: str) -> bool:
        """Whether an import succeeded for the owner Kontomatik knows by this id."""
        echo = self.config.owner_echo
        return any(echo(s.owner_external_id) == owner_external_id for s in self.stats.served)

    def revoke(self, multiple_access_id: str) -> None:
        """Revoke Multiple Access Consent; idempotent, and quiet about unknown tokens."""
        token = self._tokens.get(multiple_access_id)
        if token is not None:
            token.dead = True
            self._save()

    def owner_of_token(self, multiple_access_id: str) -> str | None:
        """The ``ownerExternalId`` behind a token, echoed on reply envelopes."""
        token = self._tokens.get(multiple_access_id)
        return token.owner_external_id if token else None

    # -- internals -----------------------------------------------------------------------

    def _new_session(
        self,
        owner_external_id: str,
        ibans: tuple[str, ...],
        target: str,
        token_id: str | None,
        history_days: int | None,
        now: datetime,
    ) -> MintedConsent:
        session_id = str(self._ids.randrange(10**11, 10**12))
        while session_id in self._sessions:
            session_id = str(self._ids.randrange(10**11, 10**12))
        consent = MintedConsent(
            owner_external_id=owner_external_id,
            session_id=session_id,
            signature=f"{self._ids.getrandbits(256):064x}",
            multiple_access_id=token_id,
            ibans=ibans,
            target=target,
        )
        self._sessions[session_id] = _Session(consent, now, history_days)
        return consent

    def _session_over(self, session: _Session, now: datetime) -> bool:
        # A session ends when its import ends, or when unused for the TTL.
        if session.command_id is not None:
            return not self._commands[session.command_id].running(now)
        return now >= session.created_at + timedelta(seconds=self.config.session_ttl_seconds)

    def _running(self, now: datetime) -> int:
        self._live = {key: c for key, c in self._live.items() if c.running(now)}
        return len(self._live)

    def _take_slot(self, now: datetime) -> None:
        full = self._running(now) >= self.config.max_running_commands
        if full or self._chance(self.config.rate_jobs_quota):
            raise ApiError("JobsQuotaExceeded", "Too many commands are running; retry later.")

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._faults.random() < rate

    def _view(self, command: _Command, now: datetime) -> Command:
        duration = (command.finishes_at - command.created_at).total_seconds()
        elapsed = (now - command.created_at).total_seconds()
        base = Command(
            id=command.id,
            state=CommandState.SETUP,
            name=_DEFAULT_IMPORT,
            progress=0,
            owner_external_id=self.config.owner_echo(command.owner_external_id),
        )
        if elapsed < duration / 4:
            return base  # like the real 202 reply: no target before the bank is reached
        base = replace(base, target=command.target)
        if elapsed < duration:
            progress = int(100 * elapsed / duration)
            return replace(base, state=CommandState.IN_PROGRESS, progress=progress)
        if command.failure is not None:
            return replace(base, state=CommandState.ERROR, failure=command.failure)
        return replace(
            base, state=CommandState.SUCCESSFUL, progress=100, result=self._result(command)
        )

    def _result(self, command: _Command) -> ImportResult:
        # The data is taken as of the command's end and kept, so every poll agrees.
        if command.result is None:
            consent = self._sessions[command.session_id].consent
            config = self.config
            seed = config.seed
            owners = _data.owners_of(
                seed,
                consent.owner_external_id,
                co_owner_rate=config.co_owner_rate,
                personal=config.owner_personal_fields,
            )
            as_of = command.finishes_at
            accounts = tuple(
                _data.account_view(seed, iban, owners, now=as_of, since=command.since)
                for iban in consent.ibans
            )
            cards = tuple(
                _data.card_view(
                    seed, consent.owner_external_id, n, owners, now=as_of, since=command.since
                )
                for n in range(config.cards_per_owner)
            )
            if config.partial_days is not None:
                cut = as_of.date() - timedelta(days=config.partial_days)
                accounts = tuple(_cut_short(a, cut) for a in accounts)
                cards = tuple(_cut_short(c, cut) for c in cards)
            command.result = ImportResult(owners=owners, accounts=accounts, credit_cards=cards)
            self.stats.served.append(
                ServedImport(
                    command_id=command.id,
                    session_id=command.session_id,
                    owner_external_id=command.owner_external_id,
                    as_of=as_of,
                    since=command.since,
                    result=command.result,
                )
            )
        return command.result

    # -- persistence ---------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_path is None:
            return
        _persist.write(
            self._state_path,
            {
                "ids": _persist.rng_state(self._ids),
                "nextCommand": self._next_command,
                "offsetSeconds": self.offset.total_seconds(),
                "faults": self.faults(),
                "sessions": {sid: _session_json(s) for sid, s in self._sessions.items()},
                "tokens": {tid: _token_json(t) for tid, t in self._tokens.items()},
                "commands": {cid: _command_json(c) for cid, c in self._commands.items()},
                "reuses": {
                    iban: [t.isoformat() for t in times]
                    for iban, times in self.stats.reuses_by_account.items()
                },
            },
        )

    def _restore(self, saved: Mapping[str, Any]) -> None:
        _persist.set_rng_state(self._ids, saved["ids"])
        self._next_command = int(saved["nextCommand"])
        self.offset = timedelta(seconds=float(saved["offsetSeconds"]))
        self.config = replace(self.config, **saved["faults"])
        self._sessions = {sid: _session_from(sid, raw) for sid, raw in saved["sessions"].items()}
        self._tokens = {tid: _token_from(raw) for tid, raw in saved["tokens"].items()}
        self._commands = {cid: _command_from(cid, raw) for cid, raw in saved["commands"].items()}
        self._live = dict(self._commands)
        self.stats.reuses_by_account = {
            iban: [datetime.fromisoformat(t) for t in times]
            for iban, times in saved["reuses"].items()
        }


def _session_json(session: _Session) -> dict[str, Any]:
    consent = session.consent
    return {
        "owner": consent.owner_external_id,
        "signature": consent.signature,
        "multipleAccessId": consent.multiple_access_id,
        "ibans": list(consent.ibans),
        "target": consent.target,
        "createdAt": session.created_at.isoformat(),
        "historyDays": session.history_days,
        "commandId": session.command_id,
    }


def _session_from(session_id: str, raw: Mapping[str, Any]) -> _Session:
    return _Session(
        consent=MintedConsent(
            owner_external_id=raw["owner"],
            session_id=session_id,
            signature=raw["signature"],
            multiple_access_id=raw["multipleAccessId"],
            ibans=tuple(raw["ibans"]),
            target=raw["target"],
        ),
        created_at=datetime.fromisoformat(raw["createdAt"]),
        history_days=raw["historyDays"],
        command_id=raw["commandId"],
    )


def _token_json(token: _Token) -> dict[str, Any]:
    return {
        "owner": token.owner_external_id,
        "ibans": list(token.ibans),
        "target": token.target,
        "expiresAt": token.expires_at.isoformat(),
        "dead": token.dead,
    }


def _token_from(raw: Mapping[str, Any]) -> _Token:
    return _Token(
        owner_external_id=raw["owner"],
        ibans=tuple(raw["ibans"]),
        target=raw["target"],
        expires_at=datetime.fromisoformat(raw["expiresAt"]),
        dead=raw["dead"],
    )


def _command_json(command: _Command) -> dict[str, Any]:
    # The result is not kept: it is a function of the seed, the accounts and the times.
    return {
        "sessionId": command.session_id,
        "owner": command.owner_external_id,
        "target": command.target,
        "createdAt": command.created_at.isoformat(),
        "finishesAt": command.finishes_at.isoformat(),
        "since": command.since.isoformat(),
        "failure": _persist.failure_json(command.failure),
    }


def _command_from(command_id: str, raw: Mapping[str, Any]) -> _Command:
    return _Command(
        id=command_id,
        session_id=raw["sessionId"],
        owner_external_id=raw["owner"],
        target=raw["target"],
        created_at=datetime.fromisoformat(raw["createdAt"]),
        finishes_at=datetime.fromisoformat(raw["finishesAt"]),
        since=date.fromisoformat(raw["since"]),
        failure=_persist.failure_from(raw["failure"]),
    )


def _cut_short(item: _Holder, cut: date) -> _Holder:
    """An account or card as a bank that timed out returns it: its last days only."""
    kept = tuple(t for t in item.transactions if t.transaction_on >= cut)
    return replace(item, partial_due_to_timeout=True, transactions=kept)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _count_after(times: Sequence[datetime], start: datetime) -> int:
    """How many of ``times``, appended as they happened, are later than ``start``: the
    list's tail, counted from its end (a sum over the whole list grew with the run)."""
    count = 0
    for moment in reversed(times):
        if moment <= start:
            break
        count += 1
    return count
