"""Structured logging: one JSON object per line (or console text for people), never a secret.

Both structlog loggers and stdlib loggers (httpx, apscheduler, aiosqlite, uvicorn) go through one
stdlib handler whose :class:`structlog.stdlib.ProcessorFormatter` renders them alike. Just before
rendering, :func:`redact` removes secrets: values under secret-looking keys at any depth,
:class:`~pydantic.SecretStr` values, and every registered secret string wherever it appears
(messages, exception texts, nested values). Under systemd (``JOURNAL_STREAM`` set) each line is
prefixed with its syslog priority (``<6>``) so journald keeps the level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from aisd.settings import LogFormat, LogLevel, Settings

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "configure_logging",
    "event_level",
    "get_logger",
    "log_lines",
    "redact",
    "register_secret",
    "whole_replaced",
]

REDACTED = "[REDACTED]"

# Normalised (lower case, no '-' or '_') key names whose values are secrets. ``tokenid`` is
# deliberately absent: it is aisd's opaque local id and must stay visible.
_SECRET_KEYS = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})
_SECRET_KEY_PARTS = ("apikey", "signature", "password", "secret", "multipleaccessid")

# A registered secret shorter than this would shred ordinary text if replaced everywhere;
# intake refuses such secrets (aisd.rpc.catalog).
MIN_SECRET_LENGTH = 8

# Feed events an operator must act on are warnings, so that `journalctl -p warning` shows them.
_WARNING_EVENTS = frozenset({"import.failed", "token.reauth_required", "token.refresh_paused"})

_secrets: set[str] = set()
# The same, longest first, so that a secret containing another is removed whole.
_longest_first: tuple[str, ...] = ()
# Values no secret can hide in, passed through as they are.
_PLAIN = frozenset({int, float, bool, type(None)})

# httpx/httpcore log full URLs and headers at INFO/DEBUG; APScheduler logs every planner tick
# twice at INFO. Their warnings still come through.
_NOISY_LOGGERS = ("httpx", "httpcore", "apscheduler")
_THIRD_PARTY_LOGGERS = ("apscheduler", "aiosqlite", "uvicorn", "uvicorn.error", "uvicorn.access")

_SYSLOG_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def register_secret(value: str | SecretStr | None) -> None:
    """Have every later log line replace ``value`` wherever it appears.

    Args:
        value: A secret learned at run time (a session signature, a ``multipleAccessId``).
            ``None`` and values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    global _longest_first
    if value is not None and len(value) >= MIN_SECRET_LENGTH:
        _secrets.add(value)
        _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def event_level(event_type: str, data: Mapping[str, Any]) -> int:
    """The log level of a feed event's line: ``WARNING`` for ``import.failed``,
    ``token.reauth_required``, ``token.refresh_paused`` and ``quota.deferred`` caused upstream
    (``upstream_limit``: someone else used the account's quota), ``INFO`` for the rest."""
    if event_type in _WARNING_EVENTS:
        return logging.WARNING
    if event_type == "quota.deferred" and data.get("reason") == "upstream_limit":
        return logging.WARNING
    return logging.INFO


# A line's keys come from a small set of names: each is judged once.
@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    norm = key.lower().replace("-", "").replace("_", "")
    return norm in _SECRET_KEYS or any(part in norm for part in _SECRET_KEY_PARTS)


def _scrub(value: Any) -> Any:
    # Ordered by how often each kind occurs in a line: thousands of lines a second pass here.
    kind = type(value)
    if kind is str:
        return _scrub_text(value) if _longest_first else value
    if kind in _PLAIN:
        return value
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            _scrub(k): REDACTED if isinstance(k, str) and _is_secret_name(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, BaseException):
        return _scrub(f"{type(value).__name__}: {value}")
    return value


def _scrub_text(value: str) -> str:
    for secret in _longest_first:
        if secret in value:
            value = whole_replaced(value, secret, REDACTED)
    return value


def _word_char(char: str) -> bool:
    return char.isalnum() or char in "_-"


def whole_replaced(text: str, secret: str, mark: str) -> str:
    """``text`` with every whole occurrence of ``secret`` replaced by ``mark``: one that is not
    glued to a letter, digit, ``_`` or ``-`` on either side (so "Session expired." keeps its
    words whatever short value happens to be a secret)."""
    out: list[str] = []
    start = 0
    while (found := text.find(secret, start)) >= 0:
        end = found + len(secret)
        before = text[found - 1] if found > 0 else ""
        after = text[end] if end < len(text) else ""
        if (before and _word_char(before)) or (after and _word_char(after)):
            out.append(text[start : found + 1])
            start = found + 1
            continue
        out.append(text[start:found])
        out.append(mark)
        start = end
    out.append(text[start:])
    return "".join(out)


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: remove secrets from the event at any depth.

    Returns:
        A copy of ``event_dict`` in which secret-keyed values, ``SecretStr`` values and
        registered secret strings are replaced by ``[REDACTED]``.
    """
    scrubbed: EventDict = _scrub(event_dict)
    return scrubbed


class _Renderer:
    """The final renderer, adding journald's ``<N>`` priority prefix under systemd."""

    def __init__(self, inner: Processor, *, journal: bool) -> None:
        self._inner = inner
        self._journal = journal

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", method_name))
        line = self._inner(logger, method_name, event_dict)
        assert isinstance(line, str)
        if not self._journal:
            return line
        return f"<{_SYSLOG_PRIORITY.get(level, 6)}>{line}"


def configure_logging(
    settings: Settings | None = None,
    *,
    log_format: LogFormat | None = None,
    log_level: LogLevel | None = None,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and the stdlib root logger; safe to call again (it replaces the setup).

    Args:
        settings: Take format, level and the API key (registered as a secret) from here.
        log_format: ``json`` (default) or ``console``; overrides ``settings``.
        log_level: ``debug``, ``info`` (default), ``warning`` or ``error``; overrides ``settings``.
        stream: Where lines go; standard output by default.
        secrets: Extra secret strings to redact from every line.
    """
    fmt: LogFormat = log_format or (settings.log_format if settings else "json")
    level_name: LogLevel = log_level or (settings.log_level if settings else "info")
    if settings is not None:
        register_secret(settings.api_key)
        if settings.webhook_secret is not None:
            for webhook_secret in settings.webhook_secret.get_secret_value().split():
                register_secret(webhook_secret)
        for url in settings.webhook_url:
            # Credentials or a token in an endpoint's URL: logs show its label instead.
            if "@" in url or "?" in url:
                register_secret(url)
    for secret in secrets:
        register_secret(secret)
    level = logging.getLevelNamesMapping()[level_name.upper()]

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    # Exceptions become data before redaction so their messages are scrubbed too; locals are
    # left out because a frame's locals may hold a key or a signature.
    exceptions: Processor = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if fmt == "json"
        else structlog.processors.format_exc_info
    )
    inner: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exceptions,
            redact,
            _Renderer(inner, journal=bool(os.environ.get("JOURNAL_STREAM"))),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    direct: list[Processor] = [
        *shared,
        structlog.processors.StackInfoRenderer(),
        *formatter.processors[1:],
    ]
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in _THIRD_PARTY_LOGGERS:
        # Their own handlers (uvicorn installs some) would print a second, unformatted line.
        third = logging.getLogger(name)
        third.handlers.clear()
        third.propagate = True
        if name not in _NOISY_LOGGERS:
            third.setLevel(logging.NOTSET)

    processors: list[Processor] = [
        structlog.stdlib.filter_by_level,
        *shared,
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    global _direct
    _direct = _Direct(tuple(processors), direct, handler)
    structlog.configure(
        processors=processors,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later configure_logging (tests, `aisd run` after argument parsing) must
        # reach loggers created at import time.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (usually ``__name__``), routed as configured."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@dataclasses.dataclass(frozen=True, slots=True)
class _Direct:
    """What :func:`log_lines` needs of the setup :func:`configure_logging` made."""

    # structlog's processors as configured: when they are no longer these (a test capturing
    # logs changes the list in place), lines take the ordinary way.
    configured: tuple[Processor, ...]
    # The same processors and the formatter's, in the order a line meets them.
    chain: list[Processor]
    handler: logging.StreamHandler[TextIO]


_direct: _Direct | None = None

_METHOD_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def log_lines(name: str, lines: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
    """Log many lines of logger ``name`` at once: each ``(level, event, fields)`` becomes
    the line ``get_logger(name).log(level, event, **fields)`` would write, redacted alike,
    and the lines are written to the stream together with one flush.

    Thousands of feed events a second are logged this way: the stdlib record, handler lock and
    flush of each line cost more than rendering it.
    """
    logger = logging.getLogger(name)
    setup = _direct
    if setup is None or tuple(structlog.get_config()["processors"]) != setup.configured:
        bound = structlog.get_logger(name)
        for level, event, fields in lines:
            bound.log(level, event, **fields)
        return
    rendered: list[str] = []
    for level, event, fields in lines:
        if not logger.isEnabledFor(level):
            continue
        method = _METHOD_NAMES[level]
        event_dict: Any = {**fields, "event": event}
        for process in setup.chain:
            event_dict = process(logger, method, event_dict)
        rendered.append(event_dict)
    if not rendered:
        return
    handler = setup.handler
    with handler.lock or contextlib.nullcontext():
        try:
            handler.stream.write(handler.terminator.join(rendered) + handler.terminator)
            handler.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": rendered[0]}))
