"""Every method of the daemon's socket: its params, result and errors, defined once.

The handlers (:mod:`aisd.rpc.methods`, :mod:`aisd.rpc.methods_data`) read their params through
the fields defined here, the server binds requests with the signatures, and ``rpc.discover``
answers the OpenRPC document generated from :data:`CATALOG`. A method served without an entry
here is refused at start-up, so the document always covers the whole surface.
docs/api.md is the prose reference; keep it in step when adding a method.
"""

from __future__ import annotations

from collections.abc import Mapping

from aisd.logs import MIN_SECRET_LENGTH
from aisd.rpc._errors import BUSY, CONFLICT, NOT_FOUND
from aisd.rpc._params import Signature, choice, date, flag, integer, month, number, text
from aisd.rpc.openrpc import ErrorSpec, MethodSpec
from aisd.sandbox import FAULT_KNOBS
from aisd.store import ImportState, TokenState

__all__ = [
    "CATALOG",
    "COMMON_ERRORS",
    "MAX_ID_LEN",
    "MIN_SECRET_LEN",
    "STORAGE_UNAVAILABLE",
    "UPSTREAM_ERROR",
]

MAX_ID_LEN = 256
# A secret this short would be a typo or a test value, and too short to redact safely from log
# lines, so intake refuses it (see docs/api.md, consent.submit).
MIN_SECRET_LEN = MIN_SECRET_LENGTH
# Upstream failed to do what was asked (e.g. a revocation it never confirmed).
UPSTREAM_ERROR = -32010
# The database refused the write (disk full, read-only): nothing was stored, retry later.
STORAGE_UNAVAILABLE = -32030

MAX_IMPORT_LIST = 1000
MAX_EVENTS_LIMIT = 1000
DEFAULT_CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 5000
MAX_FORECAST_MONTHS = 24

COMMON_ERRORS = (
    ErrorSpec(
        STORAGE_UNAVAILABLE,
        "storage unavailable: nothing was stored, try again later",
        "{reason}: why the database refused the write",
    ),
)

# -- fields ------------------------------------------------------------------------------------

OWNER = text(
    "ownerExternalId",
    "The integrator's own id of the end user (any string up to 256 characters).",
    max_len=MAX_ID_LEN,
)
SESSION_ID = text(
    "sessionId", "The widget's sessionId (onSuccess); unique per consent.", max_len=MAX_ID_LEN
)
SIGNATURE = text(
    "sessionIdSignature",
    "The widget's sessionIdSignature. A secret: stored, sent only to Kontomatik, never shown.",
    min_len=MIN_SECRET_LEN,
    max_len=4096,
)
MULTIPLE_ACCESS_ID = text(
    "multipleAccessId",
    "options.multipleAccessId from the widget when the user allowed repeated access. A secret:"
    " stored, never shown; the token is known by its tokenId.",
    min_len=MIN_SECRET_LEN,
    max_len=4096,
)
TARGET = text("target", "The widget's target (the bank).", max_len=MAX_ID_LEN)
REFRESH_UNTIL = date(
    "refreshUntil", "Cost limit: after this UTC date the token is revoked and refreshes stop."
)
MAX_IMPORTS = integer(
    "maxImports",
    "Cost limit: once this many imports succeeded the token is revoked.",
    min=1,
    max=100_000,
)
IMPORT_ID = text("importId", "An import's id, as consent.submit or import.list gave it.")
TOKEN_ID = text("tokenId", "A token's opaque local id (never the multipleAccessId).")
IMPORT_STATE = choice("state", "Only imports in this state.", [s.value for s in ImportState])
TOKEN_STATE = choice("state", "Only tokens in this state.", [s.value for s in TokenState])
EXPLAIN = flag("explain", "Add the planner's facts: quota use per account, next refresh, why.")
CURSOR = text("cursor", "The cursor of the previous page; absent for the first call.", max_len=64)
MONTH = month("month", "The UTC month, YYYY-MM.")
MONTHS = integer(
    "months", "How many months ahead, from the current one.", min=1, max=MAX_FORECAST_MONTHS
)
AFTER = integer("after", "The id of the last event already seen; 0 for the start.", min=0)
DEMO_OWNER = text(
    "ownerExternalId",
    "The demo owner; a random demo-… id when absent.",
    max_len=MAX_ID_LEN,
)
MULTIPLE_ACCESS = flag("multipleAccess", "Whether the consent grants a token (default true).")
ACCOUNTS = integer("accounts", "How many bank accounts the demo owner has.", min=1, max=5)
SECONDS = integer(
    "seconds", "How far to move the sandbox's clock forward, in seconds.", min=1, max=400 * 86400
)
FAULTS = tuple(
    number(knob, "Seconds added before every reply.", min=0, max=60)
    if knob == "latency_seconds"
    else number(knob, f"Share of requests given this fault ({knob[5:]}), 0 to 1.", min=0, max=1)
    for knob in FAULT_KNOBS
)
KILL_OWNER = text(
    "ownerExternalId",
    "The owner whose live tokens die upstream (reuses then fail with InvalidMultipleAccessId).",
    max_len=MAX_ID_LEN,
)


WEBHOOK_FROM = integer(
    "from", "The first event id to deliver again: cursors move back to from - 1.", min=1
)
WEBHOOK_ENDPOINT = text(
    "endpoint",
    "One endpoint, by its URL or the label webhooks.status shows; every endpoint when absent.",
    max_len=2048,
)


IMPORT_LIMIT = integer(
    "limit", "At most this many imports, newest first (default 100).", min=1, max=MAX_IMPORT_LIST
).or_default(100)
EVENTS_LIMIT = integer(
    "limit", "At most this many events (default 100).", min=1, max=MAX_EVENTS_LIMIT
).or_default(100)
CHANGES_LIMIT = integer(
    "limit",
    f"At most this many changes per page (default {DEFAULT_CHANGES_LIMIT}).",
    min=1,
    max=MAX_CHANGES_LIMIT,
).or_default(DEFAULT_CHANGES_LIMIT)

# -- result schemas ----------------------------------------------------------------------------

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC"}
_DATE = {"type": "string", "format": "date"}
_AMOUNT = {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": "decimal"}


def _null(schema: Mapping[str, object]) -> dict[str, object]:
    return {"oneOf": [dict(schema), {"type": "null"}]}


def _obj(**props: Mapping[str, object]) -> dict[str, object]:
    return {"type": "object", "properties": dict(props), "required": sorted(props)}


def _array(items: Mapping[str, object]) -> dict[str, object]:
    return {"type": "array", "items": dict(items)}


def _counts() -> dict[str, object]:
    return {"type": "object", "additionalProperties": _INT}


_IMPORT = _obj(
    importId=_STR,
    ownerExternalId=_STR,
    tokenId=_null(_STR),
    kind={"enum": ["initial", "refresh"]},
    state={"enum": [s.value for s in ImportState]},
    commandId=_null(_STR),
    createdAt=_TIME,
    startedAt=_null(_TIME),
    finishedAt=_null(_TIME),
    polls=_INT,
    accounts=_null(_INT),
    transactions=_null(_INT),
    since=_DATE,
    error=_null(_obj(name=_STR, message=_STR)),
)
_TOKEN = {
    **_obj(
        tokenId=_STR,
        ownerExternalId=_null(_STR),
        state={"enum": [s.value for s in TokenState]},
        createdAt=_TIME,
        expiresAt=_TIME,
        lastImportAt=_null(_TIME),
        nextRefreshAt=_null(_TIME),
        refreshesLast24h=_INT,
        deferredReason=_null({"enum": ["quota", "upstream_limit", "backoff"]}),
        stateReason=_null(_STR),
    ),
    "description": "With explain: also quota (per account: iban, used, limit, nextFreeAt),"
    " planReason and failures.",
}
_TRANSACTION = _obj(
    transactionId=_STR,
    transactionOn=_DATE,
    bookedOn=_null(_DATE),
    currencyAmount=_AMOUNT,
    currencyBalance=_null(_AMOUNT),
    title=_null(_STR),
    party=_null(_STR),
    partyIban=_null(_STR),
    kind=_null(_STR),
    status=_null(_STR),
    labels=_array(_STR),
)
_FEED_TRANSACTION = {
    **_TRANSACTION,
    "properties": {
        **_TRANSACTION["properties"],  # type: ignore[dict-item]
        "ownerExternalId": _STR,
        "source": {"enum": ["account", "card"]},
        "iban": _null(_STR),
        "cardId": _null(_STR),
        "number": _null(_STR),
        "currencyName": _STR,
    },
    "description": "iban is the account's, or a card's own (null when it has none); cardId and"
    " number come with a card's transactions only.",
}
_OWNER_BLOCK = {
    "type": "object",
    "description": "name, kind, address and every other field Kontomatik sent for the person"
    " (polishPesel, phone, email, birthDate, ...); nested fields as objects. Personal data.",
}
_ACCOUNT = _obj(
    iban=_STR,
    name=_null(_STR),
    currencyName=_STR,
    currencyBalance=_null(_AMOUNT),
    currencyFundsAvailable=_null(_AMOUNT),
    updatedAt=_TIME,
    owners=_array(_OWNER_BLOCK),
    transactions=_array(_TRANSACTION),
)
_CARD = _obj(
    cardId=_null(_STR),
    name=_null(_STR),
    number=_null(_STR),
    iban=_null(_STR),
    currencyName=_null(_STR),
    currencyBalance=_null(_AMOUNT),
    currencyFundsAvailable=_null(_AMOUNT),
    limit=_null(_AMOUNT),
    interest=_null(_AMOUNT),
    dueDate=_null(_DATE),
    owner=_null(_STR),
    owners=_array(_OWNER_BLOCK),
    partialDueToTimeout=_BOOL,
    updatedAt=_TIME,
    transactions=_array(_TRANSACTION),
)
_EVENT = _obj(
    id=_INT,
    at=_TIME,
    type=_STR,
    ownerExternalId=_null(_STR),
    tokenId=_null(_STR),
    importId=_null(_STR),
    data={"type": "object"},
)
_BILLING_LINE = _obj(
    tokenId=_STR,
    ownerExternalId=_null(_STR),
    cycles=_INT,
    imports=_INT,
    initialImports=_INT,
    refreshImports=_INT,
)

_NOT_FOUND = {
    "import": ErrorSpec(NOT_FOUND, "import not found"),
    "token": ErrorSpec(NOT_FOUND, "token not found"),
    "owner": ErrorSpec(NOT_FOUND, "owner not found"),
}
_UPSTREAM = ErrorSpec(
    UPSTREAM_ERROR, "upstream did not confirm the revocation", "{error}: the upstream error name"
)

_SPECS = (
    MethodSpec(
        "consent.submit",
        "Store a consent from the SignIn widget and queue its first import.",
        Signature(
            (
                OWNER,
                SESSION_ID,
                SIGNATURE,
                MULTIPLE_ACCESS_ID.optional(),
                TARGET.optional(),
                REFRESH_UNTIL.optional(),
                MAX_IMPORTS.optional(),
            ),
        ),
        _obj(importId=_STR, tokenId=_null(_STR)),
        (
            ErrorSpec(
                CONFLICT,
                "a consent with this sessionId was submitted with another value",
                "{field}: the first param that differs from the stored consent",
            ),
        ),
        "Idempotent per sessionId: an exact repeat returns the same ids and starts nothing; a"
        " repeat whose ownerExternalId, sessionIdSignature or multipleAccessId differs is -32009.",
    ),
    MethodSpec(
        "import.get",
        "One import.",
        Signature((IMPORT_ID,), by_position=True),
        _IMPORT,
        (_NOT_FOUND["import"],),
    ),
    MethodSpec(
        "import.list",
        "Imports, newest first.",
        Signature((OWNER.optional(), TOKEN_ID.optional(), IMPORT_STATE.optional(), IMPORT_LIMIT)),
        _obj(imports=_array(_IMPORT)),
    ),
    MethodSpec(
        "owner.data",
        "The owner's merged data: every import, without duplicates.",
        Signature((OWNER,), by_position=True),
        {
            **_obj(
                ownerExternalId=_STR,
                owners=_array(_OWNER_BLOCK),
                accounts=_array(_ACCOUNT),
                creditCards=_array(_CARD),
            ),
            "description": "Also analytics.scores when the owner was scored.",
        },
        (_NOT_FOUND["owner"],),
    ),
    MethodSpec(
        "events.list",
        "The durable event feed: ids ascend without gaps.",
        Signature((AFTER.or_default(0), EVENTS_LIMIT), by_position=True),
        _obj(events=_array(_EVENT), next=_INT),
    ),
    MethodSpec(
        "daemon.status",
        "The daemon's version, counts and health.",
        Signature(by_position=True),
        {
            **_obj(
                version=_STR,
                startedAt=_TIME,
                tokens=_counts(),
                imports=_counts(),
                runningCommands=_INT,
                queued=_INT,
                lastImportAt=_null(_TIME),
                failedLastHour=_INT,
                slotLimit=_INT,
                sandbox=_BOOL,
                storage=_obj(ok=_BOOL, error=_null(_STR), since=_null(_TIME)),
            ),
        },
    ),
    MethodSpec(
        "token.list",
        "Tokens and their refresh plan.",
        Signature((OWNER.optional(), TOKEN_STATE.optional(), EXPLAIN.optional())),
        _obj(tokens=_array(_TOKEN)),
    ),
    MethodSpec(
        "token.revoke",
        "Revoke tokens upstream (Revoke Multiple Access Consent), then stop their refreshes.",
        Signature(
            (TOKEN_ID.optional(), OWNER.optional()), exactly_one=("tokenId", "ownerExternalId")
        ),
        _obj(tokens=_array(_obj(tokenId=_STR, state=_STR))),
        (_NOT_FOUND["token"], _UPSTREAM),
    ),
    MethodSpec(
        "token.refresh",
        "Refresh a token now, if its rolling quota allows.",
        Signature((TOKEN_ID,), by_position=True),
        _obj(importId=_STR),
        (
            _NOT_FOUND["token"],
            ErrorSpec(
                BUSY,
                "the rolling quota allows no refresh now",
                "{nextPossibleAt}: when the quota next allows one",
            ),
            ErrorSpec(CONFLICT, "<why the token cannot be refreshed, e.g. token is revoked>"),
        ),
    ),
    MethodSpec(
        "data.changes",
        "Transactions added, modified and removed since a cursor, each change once.",
        Signature((CURSOR.optional(), OWNER.optional(), CHANGES_LIMIT)),
        _obj(
            added=_array(_FEED_TRANSACTION),
            modified=_array(_FEED_TRANSACTION),
            removed=_array(_obj(transactionId=_STR)),
            cursor=_STR,
            hasMore=_BOOL,
        ),
        (_NOT_FOUND["owner"],),
        "A cursor this database did not make is -32602 with field cursor.",
    ),
    MethodSpec(
        "owner.forget",
        "Revoke the owner's tokens upstream, then erase everything about the owner.",
        Signature((OWNER,), by_position=True),
        _obj(tokensRevoked=_INT, rowsDeleted=_INT),
        (
            _NOT_FOUND["owner"],
            ErrorSpec(
                UPSTREAM_ERROR,
                "upstream did not confirm the revocation; nothing was deleted",
                "{tokenId, error}",
            ),
            ErrorSpec(CONFLICT, "<why the owner cannot be erased now>"),
        ),
    ),
    MethodSpec(
        "billing.report",
        "Billing cycles that end in a UTC month, and the imports billed with them.",
        Signature((MONTH,), by_position=True),
        _obj(
            month=_STR,
            cycles=_INT,
            imports=_INT,
            initialImports=_INT,
            refreshImports=_INT,
            tokens=_array(_BILLING_LINE),
        ),
    ),
    MethodSpec(
        "billing.forecast",
        "Projected cycles and imports for the coming months.",
        Signature((MONTHS,), by_position=True),
        _obj(months=_array(_obj(month=_STR, cycles=_INT, imports=_INT))),
    ),
    MethodSpec(
        "sandbox.mint",
        "A demo consent from the embedded sandbox (aisd run --sandbox only), secrets included.",
        Signature((DEMO_OWNER.optional(), MULTIPLE_ACCESS.optional(), ACCOUNTS.optional())),
        _obj(
            ownerExternalId=_STR,
            sessionId=_STR,
            sessionIdSignature=_STR,
            multipleAccessId=_null(_STR),
            target=_STR,
        ),
    ),
)

_WEBHOOK_ENDPOINT_STATE = _obj(
    endpoint=_STR,
    cursor=_INT,
    head=_INT,
    lagEvents=_INT,
    lagSeconds={"type": "number"},
    attempts=_INT,
    nextAttemptAt=_null(_TIME),
    lastSuccessAt=_null(_TIME),
    lastError=_null(_obj(message=_STR, at=_null(_TIME))),
)
_OPS_SPECS = (
    MethodSpec(
        "webhooks.status",
        "Each webhook endpoint's cursor, lag, last success and last error.",
        Signature(by_position=True),
        _obj(endpoints=_array(_WEBHOOK_ENDPOINT_STATE)),
        (),
        "endpoint is the URL without credentials, query or fragment; lagEvents counts the events"
        " after the cursor it still has to receive, lagSeconds the age of the oldest of them."
        " No endpoints without AISD_WEBHOOK_URL.",
    ),
    MethodSpec(
        "webhooks.redeliver",
        "Deliver every event from an id on again: the endpoints' cursors move back.",
        Signature((WEBHOOK_FROM, WEBHOOK_ENDPOINT.optional())),
        _obj(endpoints=_array(_WEBHOOK_ENDPOINT_STATE)),
        (ErrorSpec(NOT_FOUND, "no such webhook endpoint"),),
        "A cursor never moves forward: events after it are delivered anyway.",
    ),
)

_SANDBOX_STATUS = _obj(
    now=_TIME,
    offsetSeconds={"type": "number"},
    sessions=_INT,
    tokens=_INT,
    deadTokens=_INT,
    runningCommands=_INT,
    faults={"type": "object", "additionalProperties": {"type": "number"}},
    statePath=_null(_STR),
)
_SANDBOX_SPECS = (
    MethodSpec(
        "sandbox.status",
        "The embedded sandbox's clock, counts and fault knobs (aisd run --sandbox only).",
        Signature(by_position=True),
        _SANDBOX_STATUS,
    ),
    MethodSpec(
        "sandbox.advance",
        "Move the embedded sandbox's clock forward: new transactions, bookings, ageing.",
        Signature((SECONDS,), by_position=True),
        _obj(now=_TIME),
    ),
    MethodSpec(
        "sandbox.faults",
        "Set the embedded sandbox's fault knobs; absent knobs keep their value.",
        Signature(tuple(knob.optional() for knob in FAULTS)),
        _obj(faults={"type": "object", "additionalProperties": {"type": "number"}}),
    ),
    MethodSpec(
        "sandbox.kill",
        "Kill an owner's live tokens upstream, as a bank or user revocation would.",
        Signature((KILL_OWNER,), by_position=True),
        _obj(killed=_INT),
    ),
)

CATALOG: Mapping[str, MethodSpec] = {
    spec.name: spec for spec in (*_SPECS, *_OPS_SPECS, *_SANDBOX_SPECS)
}
