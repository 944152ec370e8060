"""Pure renderers of socket results for people: tables, relative times and CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "CSV_HEADER",
    "event_line",
    "key_values",
    "parse_time",
    "relative_time",
    "render_billing",
    "render_changes",
    "render_data",
    "render_events",
    "render_generic",
    "render_imports",
    "render_revoked",
    "render_status",
    "render_tokens",
    "table",
    "transactions_csv",
]

CSV_HEADER = (
    "iban",
    "currency",
    "transactionOn",
    "bookedOn",
    "amount",
    "balance",
    "title",
    "party",
    "partyIban",
    "kind",
    "status",
    "labels",
    "source",
    "cardId",
    "transactionId",
)


def parse_time(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string (``Z`` allowed), else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def relative_time(value: object, now: datetime) -> str:
    """``"in 5 h"``, ``"3 min ago"``, ``"just now"``; ``"-"`` for none; other text unchanged."""
    if value is None:
        return "-"
    when = parse_time(value)
    if when is None:
        return str(value)
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    if span < 45:
        return "just now"
    if span < 90 * 60:
        amount = f"{max(1, round(span / 60))} min"
    elif span < 36 * 3600:
        amount = f"{round(span / 3600)} h"
    else:
        amount = f"{round(span / 86400)} d"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def next_refresh(token: Mapping[str, Any], now: datetime) -> str:
    """When a token's next refresh comes, never "just now": a time already reached is either
    ``"due now"`` or, once the refresh it named has been made, ``"being planned"``."""
    when = parse_time(token.get("nextRefreshAt"))
    if when is None:
        return relative_time(token.get("nextRefreshAt"), now)
    if (when - now).total_seconds() >= 45:
        return relative_time(when.isoformat(), now)
    if when > now:
        return "in <1 min"
    last = parse_time(token.get("lastImportAt"))
    return "being planned" if last is not None and last >= when else "due now"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` shows as ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def key_values(mapping: Mapping[str, Any], now: datetime) -> str:
    """One ``key: value`` line per field; times get their relative form too."""
    width = max((len(k) for k in mapping), default=0)
    lines = []
    for key, value in mapping.items():
        shown = _cell(value)
        if parse_time(value) is not None:
            shown = f"{value} ({relative_time(value, now)})"
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def render_imports(result: Mapping[str, Any], now: datetime) -> str:
    """``import.list`` as a table, newest first as the daemon sends it."""
    rows = [
        (
            i.get("importId"),
            i.get("ownerExternalId"),
            i.get("kind"),
            i.get("state"),
            relative_time(i.get("createdAt"), now),
            relative_time(i.get("finishedAt"), now),
            i.get("accounts"),
            i.get("transactions"),
            (i.get("error") or {}).get("name"),
        )
        for i in result.get("imports", [])
    ]
    headers = ("IMPORT", "OWNER", "KIND", "STATE", "CREATED", "FINISHED", "ACCTS", "TXNS", "ERROR")
    return table(headers, rows)


def render_tokens(result: Mapping[str, Any], now: datetime, *, explain: bool = False) -> str:
    """``token.list`` as a table; with ``explain``, each token's quota and deferral below it."""
    headers = ("TOKEN", "OWNER", "STATE", "EXPIRES", "LAST IMPORT", "NEXT REFRESH", "24H")
    tokens = result.get("tokens", [])
    rows = [
        (
            t.get("tokenId"),
            t.get("ownerExternalId"),
            t.get("state"),
            relative_time(t.get("expiresAt"), now),
            relative_time(t.get("lastImportAt"), now),
            next_refresh(t, now),
            t.get("refreshesLast24h"),
        )
        for t in tokens
    ]
    text = table(headers, rows)
    if not explain:
        return text
    parts = [text]
    for token in tokens:
        parts.append(f"\n{token.get('tokenId')}:")
        why = f" ({token['planReason']})" if token.get("planReason") else ""
        parts.append(f"  next refresh: {next_refresh(token, now)}{why}")
        if token.get("deferredReason"):
            parts.append(f"  deferred: {token['deferredReason']}")
        if token.get("failures"):
            parts.append(f"  failed refreshes in a row: {token['failures']}")
        quota = token.get("quota") or []
        if quota:
            quota_rows = [
                (
                    q.get("iban"),
                    f"{q.get('used')}/{q.get('limit')}",
                    relative_time(q.get("nextFreeAt"), now),
                )
                for q in quota
            ]
            block = table(("IBAN", "USED", "NEXT FREE"), quota_rows)
            parts.append("\n".join("  " + line for line in block.splitlines()))
    return "\n".join(parts)


def render_revoked(result: Mapping[str, Any]) -> str:
    """``token.revoke``: each token and its state now."""
    rows = [(t.get("tokenId"), t.get("state")) for t in result.get("tokens", [])]
    return table(("TOKEN", "STATE"), rows)


def render_events(events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """Rows of ``events.list`` (without the header when there are none)."""
    rows = [
        (
            e.get("id"),
            relative_time(e.get("at"), now),
            e.get("type"),
            e.get("ownerExternalId"),
            e.get("tokenId"),
            e.get("importId"),
            e.get("data") or None,
        )
        for e in events
    ]
    return table(("ID", "AT", "TYPE", "OWNER", "TOKEN", "IMPORT", "DATA"), rows)


def event_line(event: Mapping[str, Any]) -> str:
    """One event on one line, for ``events --follow``: id, time, type, then the ids and data."""
    fields = [str(event.get("id")), str(event.get("at")), str(event.get("type"))]
    for key, label in (("ownerExternalId", "owner"), ("tokenId", "token"), ("importId", "import")):
        if event.get(key) is not None:
            fields.append(f"{label}={event[key]}")
    if event.get("data"):
        fields.append(_cell(event["data"]))
    return "  ".join(fields)


def _transactions_table(holder: Mapping[str, Any]) -> str:
    rows = [
        (
            t.get("transactionOn"),
            t.get("currencyAmount"),
            t.get("currencyBalance"),
            t.get("title"),
            t.get("party"),
            t.get("status"),
        )
        for t in holder.get("transactions", [])
    ]
    return table(("DATE", "AMOUNT", "BALANCE", "TITLE", "PARTY", "STATUS"), rows)


def render_data(result: Mapping[str, Any], now: datetime) -> str:
    """``owner.data``: per account and credit card a summary line, then its transactions."""
    parts = [f"owner {result.get('ownerExternalId')}"]
    for score in (result.get("analytics") or {}).get("scores", []):
        parts.append(
            f"score {score.get('modelId')}: {score.get('score')} "
            f"(percentile {score.get('percentile')}, tier {score.get('tier')})"
        )
    for account in result.get("accounts", []):
        parts.append(
            f"\n{account.get('iban')}  {account.get('name') or ''}  "
            f"balance {account.get('currencyBalance')} {account.get('currencyName')}  "
            f"available {account.get('currencyFundsAvailable')}  "
            f"updated {relative_time(account.get('updatedAt'), now)}"
        )
        parts.append(_transactions_table(account))
    for card in result.get("creditCards", []):
        parts.append(
            f"\ncard {card.get('number') or card.get('cardId')}  {card.get('name') or ''}  "
            f"balance {card.get('currencyBalance')} {card.get('currencyName')}  "
            f"limit {card.get('limit')}  due {card.get('dueDate') or '-'}"
        )
        parts.append(_transactions_table(card))
    return "\n".join(parts)


def transactions_csv(result: Mapping[str, Any]) -> str:
    """``owner.data`` as CSV: one header row, then one row per transaction of every account
    and credit card (``source`` says which; a card's row has its own IBAN, if any, and its
    ``cardId``, else its masked number)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    holders = [("account", a, None) for a in result.get("accounts", [])] + [
        ("card", c, c.get("cardId") or c.get("number")) for c in result.get("creditCards", [])
    ]
    for source, holder, card in holders:
        for t in holder.get("transactions", []):
            writer.writerow(
                [
                    holder.get("iban"),
                    holder.get("currencyName"),
                    t.get("transactionOn"),
                    t.get("bookedOn"),
                    t.get("currencyAmount"),
                    t.get("currencyBalance"),
                    t.get("title"),
                    t.get("party"),
                    t.get("partyIban"),
                    t.get("kind"),
                    t.get("status"),
                    ";".join(str(label) for label in t.get("labels") or []),
                    source,
                    card,
                    t.get("transactionId"),
                ]
            )
    return out.getvalue()


def render_changes(result: Mapping[str, Any]) -> str:
    """``data.changes``: counts per kind of change and the next cursor."""
    counts = ", ".join(f"{len(result.get(k, []))} {k}" for k in ("added", "modified", "removed"))
    return f"{counts}\ncursor {result.get('cursor')}"


def render_billing(result: Mapping[str, Any]) -> str:
    """``billing.report``: the month's totals, then one row per token."""
    head = (
        f"month {result.get('month')}: {result.get('cycles')} cycles, "
        f"{result.get('imports')} imports"
    )
    rows = [
        (t.get("tokenId"), t.get("ownerExternalId"), t.get("cycles"), t.get("imports"))
        for t in result.get("tokens", [])
    ]
    return head + "\n" + table(("TOKEN", "OWNER", "CYCLES", "IMPORTS"), rows)


def render_generic(result: Any, now: datetime) -> str:
    """Any result: lists of objects as tables, objects as ``key: value`` lines."""
    if isinstance(result, list) and all(isinstance(r, dict) for r in result):
        headers = list(dict.fromkeys(k for r in result for k in r))
        return table(headers, [[r.get(h) for h in headers] for r in result])
    if not isinstance(result, dict):
        return _cell(result)
    scalars = {k: v for k, v in result.items() if not isinstance(v, list)}
    parts = [key_values(scalars, now)] if scalars else []
    for key, value in result.items():
        if isinstance(value, list):
            parts.append(f"\n{key}:\n{render_generic(value, now)}")
    return "\n".join(parts)


def render_status(result: Mapping[str, Any], now: datetime) -> str:
    """``daemon.status`` at a glance."""

    def counts(by_state: object) -> str:
        if not isinstance(by_state, Mapping) or not by_state:
            return "none"
        return ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))

    started = result.get("startedAt")
    up = relative_time(started, now).removesuffix(" ago") if started else "-"
    lines = [
        f"aisd {result.get('version')}, up {up} (since {started})",
        f"tokens:   {counts(result.get('tokens'))}",
        f"imports:  {counts(result.get('imports'))}",
        f"running:  {result.get('runningCommands')} commands, {result.get('queued')} queued",
        f"last import: {relative_time(result.get('lastImportAt'), now)}"
        f"   failed in the last hour: {result.get('failedLastHour', '-')}",
    ]
    storage = result.get("storage")
    if isinstance(storage, Mapping) and storage.get("ok") is False:
        lines.append(
            f"storage:  UNAVAILABLE ({storage.get('error')}) since {storage.get('since')}:"
            " consents are refused, imports wait"
        )
    return "\n".join(lines)


def render_webhooks(result: Mapping[str, Any], now: datetime) -> str:
    """``webhooks.status``: one row per endpoint, then each endpoint's last error."""
    endpoints = result.get("endpoints") or []
    if not endpoints:
        return "no webhook endpoint configured (AISD_WEBHOOK_URL)"
    rows = [
        (
            e.get("endpoint"),
            f"{e.get('cursor')}/{e.get('head')}",
            e.get("lagEvents"),
            f"{e.get('lagSeconds')} s",
            relative_time(e.get("lastSuccessAt"), now),
            relative_time(e.get("nextAttemptAt"), now) if e.get("nextAttemptAt") else "-",
        )
        for e in endpoints
    ]
    lines = [table(("endpoint", "cursor", "lag", "oldest waiting", "last success", "retry"), rows)]
    for e in endpoints:
        error = e.get("lastError")
        if isinstance(error, Mapping):
            lines.append(
                f"{e.get('endpoint')}: last error {relative_time(error.get('at'), now)}: "
                f"{error.get('message')} (attempt {e.get('attempts')})"
            )
    return "\n".join(lines)
