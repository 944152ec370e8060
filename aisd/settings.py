"""The daemon's configuration: every ``AISD_*`` setting, validated once at start.

Values come from (highest priority first) the environment, an optional env file and, for secrets,
files in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=aisd_api_key:...``). A bad value stops
the start with a :class:`SettingsError` that names the setting and the rule it breaks, and never the
value itself: the value may be a secret pasted into the wrong variable.
"""

from __future__ import annotations

import base64
import binascii
import grp
import os
import pwd
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "LogFormat",
    "LogLevel",
    "Settings",
    "SettingsError",
    "decode_webhook_secret",
    "default_db_path",
    "default_socket_path",
    "env_name",
    "load_settings",
    "parse_listen",
]

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

_PREFIX = "AISD_"
_CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the setting, never its value."""


def env_name(field: str) -> str:
    """The variable of a settings field: ``poll_min_seconds`` → ``AISD_POLL_MIN_SECONDS``."""
    upper = field.upper()
    return upper if upper.startswith(_PREFIX) else _PREFIX + upper


def default_db_path() -> Path:
    """``$STATE_DIRECTORY/aisd.db`` under systemd, else ``./aisd.db``."""
    return _under_env_dir("STATE_DIRECTORY", "aisd.db")


def default_socket_path() -> Path:
    """``$RUNTIME_DIRECTORY/aisd.sock`` under systemd, else ``./aisd.sock``."""
    return _under_env_dir("RUNTIME_DIRECTORY", "aisd.sock")


# Kontomatik analytics aisd can fetch after each successful import (AISD_ANALYTICS).
ANALYTICS = frozenset({"scores"})

# Standard Webhooks secrets: "whsec_" and the base64 of 24 to 64 random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_EVENT_TYPE = re.compile(r"[a-z]+(\.[a-z_]+)+")
_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})"
)


def decode_webhook_secret(value: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret.

    Raises:
        ValueError: not ``whsec_`` and the base64 of 24 to 64 bytes (the value is not echoed).
    """
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("must start with whsec_ (a Standard Webhooks secret)")
    try:
        key = base64.b64decode(value.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must be whsec_ followed by the base64 of 24 to 64 bytes")
    return key


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as a pair.

    Raises:
        ValueError: not of that form, or the port is outside 1..65535.
    """
    match = _LISTEN.fullmatch(value.strip())
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    return match["v6"] or match["host"], int(match["port"])


def _under_env_dir(variable: str, name: str) -> Path:
    # systemd may list several directories separated by ':'; the first is ours.
    directory = os.environ.get(variable, "").split(":")[0]
    return Path(directory or ".") / name


def _default_uids() -> frozenset[int]:
    return frozenset({os.getuid(), 0})


def _split_list(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, Iterable):
        return [str(part).strip() for part in raw]
    raise ValueError("must be a comma-separated list")


def _resolve_ids(raw: object, *, kind: Literal["user", "group"]) -> frozenset[int]:
    ids: set[int] = set()
    for part in _split_list(raw):
        if part.isdigit():
            ids.add(int(part))
            continue
        try:
            ids.add(pwd.getpwnam(part).pw_uid if kind == "user" else grp.getgrnam(part).gr_gid)
        except KeyError:
            # The name is not echoed: the message must stay safe whatever was typed.
            raise ValueError(
                f"every entry must be a {kind} id or an existing {kind} name"
            ) from None
    return frozenset(ids)


class Settings(BaseSettings):
    """Every ``AISD_*`` setting (see ``aisd.example.env`` for meanings and defaults).

    Build it with :func:`load_settings`, which adds the env file, the credentials directory, the
    ``--sandbox`` relaxation and error messages that never echo a value.
    """

    model_config = SettingsConfigDict(
        env_prefix=_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        # Unrelated keys in a shared env file are fine; mistyped AISD_* names are caught in
        # load_settings, which sees both the environment and the file.
        extra="ignore",
        frozen=True,
    )

    api_url: str = "https://test.api.kontomatik.com"
    api_key: SecretStr | None = None
    db_path: Path = Field(default_factory=default_db_path)
    socket_path: Path = Field(default_factory=default_socket_path)
    socket_mode: int = 0o660
    allowed_uids: Annotated[frozenset[int], NoDecode] = Field(default_factory=_default_uids)
    allowed_gids: Annotated[frozenset[int], NoDecode] = frozenset()
    refreshes_per_day: int = Field(default=4, ge=1, le=4)
    access_days: int = Field(default=180, ge=1, le=180)
    max_running_commands: int = Field(default=8, ge=1, le=8)
    poll_min_seconds: float = Field(default=2.0, ge=2.0, le=5.0)
    poll_max_seconds: float = Field(default=5.0, ge=2.0, le=5.0)
    initial_history_days: int = Field(default=365, ge=1)
    expiry_warning_days: Annotated[tuple[int, ...], NoDecode] = (14, 7, 3, 1)
    log_format: LogFormat = "json"
    log_level: LogLevel = "info"
    raw_retention_days: int = Field(default=90, ge=0)
    retention_days: int | None = Field(default=None, ge=1)
    max_reply_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    refresh_overlap_days: int = Field(default=3, ge=0)
    socket_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    socket_max_connections: int = Field(default=64, ge=1)
    planner_tick_seconds: float = Field(default=30.0, gt=0)
    analytics: Annotated[frozenset[str], NoDecode] = frozenset()
    webhook_url: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_secret: SecretStr | None = None
    webhook_events: Annotated[frozenset[str], NoDecode] = frozenset()
    webhook_retry_seconds: float = Field(default=1.0, gt=0, le=600)
    metrics_listen: str | None = None
    backup_keep: int = Field(default=7, ge=1)

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _parse_mode(cls, value: Any) -> int:
        if isinstance(value, str):
            digits = value.strip().removeprefix("0o")
            if not digits or any(c not in "01234567" for c in digits):
                raise ValueError("must be an octal file mode such as 0660")
            value = int(digits, 8)
        if not isinstance(value, int) or not 0 <= value <= 0o777:
            raise ValueError("must be an octal file mode between 0000 and 0777")
        return value

    @field_validator("allowed_uids", mode="before")
    @classmethod
    def _parse_uids(cls, value: Any) -> frozenset[int]:
        return _resolve_ids(value, kind="user")

    @field_validator("allowed_gids", mode="before")
    @classmethod
    def _parse_gids(cls, value: Any) -> frozenset[int]:
        return _resolve_ids(value, kind="group")

    @field_validator("expiry_warning_days", mode="before")
    @classmethod
    def _parse_warning_days(cls, value: Any) -> tuple[int, ...]:
        parts = _split_list(value)
        if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError("must be a comma-separated list of positive whole days")
        return tuple(sorted({int(p) for p in parts}, reverse=True))

    @field_validator("analytics", mode="before")
    @classmethod
    def _parse_analytics(cls, value: Any) -> frozenset[str]:
        parts = {part.lower() for part in _split_list(value)}
        if not parts <= ANALYTICS:
            raise ValueError(f"must be a comma-separated list of: {', '.join(sorted(ANALYTICS))}")
        return frozenset(parts)

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _parse_webhook_urls(cls, value: Any) -> tuple[str, ...]:
        urls = tuple(dict.fromkeys(_split_list(value)))
        if not all(u.startswith(("https://", "http://")) and len(u) <= 2048 for u in urls):
            raise ValueError("must be a comma-separated list of http:// or https:// URLs")
        return urls

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Several secrets (whitespace-separated) while a receiver rotates: each signs.
        secrets = value.get_secret_value().split()
        if not secrets:
            raise ValueError("must hold at least one whsec_ secret")
        for secret in secrets:
            decode_webhook_secret(secret)
        return SecretStr(" ".join(secrets))

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _parse_webhook_events(cls, value: Any) -> frozenset[str]:
        parts = frozenset(_split_list(value))
        if not all(_EVENT_TYPE.fullmatch(p) for p in parts):
            raise ValueError("must be a comma-separated list of event types, e.g. import.succeeded")
        return parts

    @field_validator("metrics_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @property
    def webhook_keys(self) -> tuple[bytes, ...]:
        """The HMAC keys of ``AISD_WEBHOOK_SECRET`` (none without it)."""
        if self.webhook_secret is None:
            return ()
        return tuple(
            decode_webhook_secret(s) for s in self.webhook_secret.get_secret_value().split()
        )

    @property
    def first_import_history_days(self) -> int:
        """Days of history a consent's first import fetches: ``AISD_INITIAL_HISTORY_DAYS``, but
        never more than retention would purge at once (that would only churn the change feed)."""
        if self.retention_days is None:
            return self.initial_history_days
        return min(self.initial_history_days, self.retention_days)

    @model_validator(mode="after")
    def _check_poll_order(self) -> Self:
        if self.poll_min_seconds > self.poll_max_seconds:
            raise ValueError("AISD_POLL_MIN_SECONDS must not exceed AISD_POLL_MAX_SECONDS")
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "AISD_WEBHOOK_URL needs a signing secret: a credential file aisd_webhook_secret "
                "in $CREDENTIALS_DIRECTORY (or AISD_WEBHOOK_SECRET)"
            )
        return self


def load_settings(env_file: str | None = None, *, sandbox: bool = False) -> Settings:
    """Load and validate the settings.

    Args:
        env_file: An env file (``KEY=value`` lines) read beneath the environment; it must exist.
        sandbox: ``aisd run --sandbox``: the API key is not required.

    Returns:
        The validated, immutable settings.

    Raises:
        SettingsError: A value is invalid or missing; the message names the setting and the
            rule, never the value.
    """
    if env_file is not None and not Path(env_file).is_file():
        raise SettingsError(f"--env-file: {env_file} does not exist or is not a file")
    _reject_unknown_names(env_file)
    secrets_dir = os.environ.get(_CREDENTIALS_DIRECTORY) or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise SettingsError(f"{_CREDENTIALS_DIRECTORY}: {secrets_dir} is not a directory")
    try:
        settings = Settings(_env_file=env_file, _secrets_dir=secrets_dir)  # type: ignore[call-arg]
    except ValidationError as exc:
        # ``from None``: the chained ValidationError's text would echo the offending input.
        raise SettingsError(_describe(exc)) from None
    if settings.api_key is None and not sandbox:
        raise SettingsError(
            f"{env_name('api_key')} is required (or a credential file aisd_api_key in "
            f"${_CREDENTIALS_DIRECTORY}); only `aisd run --sandbox` runs without it"
        )
    return settings


def _reject_unknown_names(env_file: str | None) -> None:
    names = set(os.environ)
    if env_file is not None:
        names |= set(dotenv_values(env_file))
    known = {env_name(field) for field in Settings.model_fields}
    unknown = sorted(n.upper() for n in names if n.upper().startswith(_PREFIX))
    unknown = [n for n in unknown if n not in known]
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)} (see aisd.example.env)")


def _describe(exc: ValidationError) -> str:
    """One line per error, built from the location and pydantic's rule text (never ``input``)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        rule = error["msg"].removeprefix("Value error, ")
        lines.append(f"{env_name(str(loc[0]))}: {rule}" if loc else rule)
    return "invalid configuration: " + "; ".join(lines)
