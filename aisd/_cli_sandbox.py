"""``aisd sandbox-ctl``: the sandbox's test controls, from the command line.

Against the daemon's embedded sandbox (``aisd run --sandbox``, e.g. ``make run``) the controls go
through the socket (``sandbox.*`` methods); with ``--url`` they go to a stand-alone
``aisd sandbox`` over HTTP (``/sandbox/...``, with the sandbox's ``X-Api-Key``). Both end in the
same :class:`aisd.sandbox.Sandbox` methods.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import httpx

from aisd.client import Client, RpcError
from aisd.sandbox import CONTROL_PATHS, DEFAULT_API_KEY, FAULT_KNOBS
from aisd.settings import load_settings

__all__ = ["add_arguments", "run"]

_METHOD_NOT_FOUND = -32601
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Option names of the fault rates (``--timeouts``, not ``--timeout``: that is the client's own).
_RATE_FLAGS = {
    "rate_5xx": "--5xx",
    "rate_timeout": "--timeouts",
    "rate_malformed": "--malformed",
    "rate_jobs_quota": "--jobs-quota",
    "rate_access_limit": "--access-limit",
    "rate_import_error": "--import-errors",
}


class ControlError(Exception):
    """The sandbox refused a control (bad value) or could not be reached."""


def _duration(value: str) -> int:
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError("expected a duration such as 90s, 15m, 2h or 3d")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError("expected a share from 0 to 1")
    return rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sandbox-ctl`` options and actions."""
    parser.add_argument(
        "--url",
        help="a stand-alone `aisd sandbox` (e.g. http://127.0.0.1:8080); default: the daemon's "
        "embedded sandbox, through its socket",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="the sandbox's clock, counts and fault knobs")
    mint = actions.add_parser("mint", help="mint a consent (the widget's onSuccess values)")
    mint.add_argument("--owner", required=True, metavar="ID", help="the owner's external id")
    mint.add_argument("--single", action="store_true", help="a one-off consent without a token")
    mint.add_argument(
        "--accounts",
        metavar="N|IBAN,...",
        help="how many accounts, or the IBANs to use (owners given one IBAN share its quota)",
    )
    advance = actions.add_parser("advance", help="move the sandbox's clock forward")
    advance.add_argument("duration", type=_duration, help="how far: 90s, 15m, 2h, 3d")
    faults = actions.add_parser("faults", help="set fault rates (shares from 0 to 1)")
    faults.add_argument("--latency", type=float, dest="latency_seconds", metavar="S")
    for knob, flag in _RATE_FLAGS.items():
        faults.add_argument(flag, type=_rate, dest=knob, metavar="SHARE")
    kill = actions.add_parser(
        "kill", help="kill an owner's tokens upstream (refreshes then get InvalidMultipleAccessId)"
    )
    kill.add_argument("--owner", required=True, metavar="ID", help="the owner's external id")
    actions.add_parser(
        "stats",
        help="what a stand-alone sandbox has seen (imports per session, reuses per account, "
        "polls per command, the peak of running commands); needs --url",
    )


def _over_http(args: argparse.Namespace, action: str, form: dict[str, str]) -> Any:
    settings = load_settings(args.env_file, sandbox=True)
    key = settings.api_key.get_secret_value() if settings.api_key else DEFAULT_API_KEY
    url = args.url.rstrip("/") + CONTROL_PATHS[action]
    try:
        if action in ("status", "stats"):
            reply = httpx.get(url, headers={"X-Api-Key": key}, timeout=args.timeout)
        else:
            reply = httpx.post(url, data=form, headers={"X-Api-Key": key}, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise ControlError(f"sandbox not reachable at {args.url}: {type(exc).__name__}") from None
    try:
        body = reply.json()
    except ValueError:
        raise ControlError(f"{args.url} answered HTTP {reply.status_code}, not a sandbox") from None
    if reply.status_code != 200:
        raise ControlError(str(body.get("error", reply.status_code)))
    return body


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.action == "mint":
        params: dict[str, Any] = {"ownerExternalId": args.owner, "multipleAccess": not args.single}
        if args.accounts is not None:
            accounts = args.accounts.strip()
            params["accounts"] = int(accounts) if accounts.isdigit() else accounts
        return "mint", params
    if args.action == "advance":
        return "advance", {"seconds": args.duration}
    if args.action == "faults":
        rates = {k: getattr(args, k) for k in FAULT_KNOBS if getattr(args, k) is not None}
        return "faults", rates
    if args.action == "kill":
        return "kill", {"ownerExternalId": args.owner}
    if args.action == "stats":
        return "stats", {}
    return "status", {}


def run(args: argparse.Namespace, client: Callable[[argparse.Namespace], Client]) -> int:
    """Carry out one ``sandbox-ctl`` action and print its result as JSON.

    Returns:
        0 once done; 1 when a stand-alone sandbox refused or could not be reached.
    """
    action, params = _request(args)
    if not args.url and (action == "stats" or isinstance(params.get("accounts"), str)):
        what = "stats" if action == "stats" else "mint --accounts IBAN,..."
        print(
            f"aisd: sandbox-ctl: {what} needs a stand-alone `aisd sandbox`: give its --url",
            file=sys.stderr,
        )
        return 1
    if args.url:
        form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        try:
            result = _over_http(args, action, form)
        except ControlError as exc:
            print(f"aisd: sandbox-ctl: {exc}", file=sys.stderr)
            return 1
    else:
        try:
            result = client(args).call(f"sandbox.{action}", params)
        except RpcError as exc:
            if exc.code != _METHOD_NOT_FOUND:
                raise
            print(
                "aisd: sandbox-ctl: this daemon runs without --sandbox; for a stand-alone "
                "`aisd sandbox` give its --url",
                file=sys.stderr,
            )
            return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
