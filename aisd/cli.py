"""The ``aisd`` command: the daemon, the sandbox, simulations and the socket clients.

Exit codes: 0 success; 1 operational failure (daemon not reachable, RPC or upstream error);
2 usage or configuration error (the message names the setting, never its value).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aisd import __version__
from aisd import _cli_format as fmt
from aisd import _cli_sandbox as sandbox_ctl
from aisd.client import Client, DaemonUnavailable, ProtocolError, RpcError
from aisd.logs import configure_logging
from aisd.sandbox import SandboxConfig
from aisd.settings import Settings, SettingsError, check_database_url, load_settings

__all__ = ["build_parser", "main"]

_FOLLOW_INTERVAL_SECONDS = 1.0
# Where a packaged daemon listens (systemd/aisd.socket), tried after $RUNTIME_DIRECTORY.
_INSTALLED_SOCKET = Path("/run/aisd/aisd.sock")
_PROBE_SECONDS = 1.0
# -32602: the daemon refused the params, i.e. the command line asked for something invalid.
_INVALID_PARAMS = -32602

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Arguments that parse but do not make sense together (exit code 2)."""


def main(argv: list[str] | None = None) -> int:
    """Run the ``aisd`` command line.

    Args:
        argv: The arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit code: 0 ok, 1 operational failure, 2 usage or configuration error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except (SettingsError, UsageError) as exc:
        _fail(str(exc))
        return 2
    except DaemonUnavailable as exc:
        _fail(f"{exc} (is `aisd run` running? see AISD_SOCKET_PATH or --socket)")
        return 1
    except RpcError as exc:
        _fail(_describe_rpc_error(exc))
        return 2 if exc.code == _INVALID_PARAMS else 1
    except ProtocolError as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `aisd data ... | head`: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not raise again, and end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _fail(message: str) -> None:
    print(f"aisd: {message}", file=sys.stderr)


def _describe_rpc_error(exc: RpcError) -> str:
    text = f"error {exc.code}: {exc.message}"
    if isinstance(exc.data, dict) and exc.data.get("nextPossibleAt"):
        when = exc.data["nextPossibleAt"]
        return f"{text} (next possible {fmt.relative_time(when, _now())}, at {when})"
    if exc.data is not None:
        return f"{text} {json.dumps(exc.data, ensure_ascii=False)}"
    return text


def _now() -> datetime:
    return datetime.now(UTC)


# -- parser -------------------------------------------------------------------------------------


def _month(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise argparse.ArgumentTypeError("expected YYYY-MM, e.g. 2026-11")
    return value


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return seconds


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError("expected a port number from 1 to 65535")
    return int(value)


def _non_negative(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError("expected a whole number of at least 0")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``aisd`` subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="PATH",
        help="read AISD_* settings from this file (beneath the environment); it must exist",
    )
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's socket (default: AISD_SOCKET_PATH, else the first that answers of "
        "$RUNTIME_DIRECTORY/aisd.sock, /run/aisd/aisd.sock and ./aisd.sock)",
    )
    client.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds to wait for the daemon (default 30)",
    )
    client.add_argument("--json", action="store_true", help="print the raw JSON result")

    parser = argparse.ArgumentParser(
        prog="aisd",
        description="Keeps Kontomatik multiple-access bank data fresh, within its rules.",
        epilog="Exit codes: 0 ok, 1 operational failure, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"aisd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, text: str, *, is_client: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=text, description=text, parents=[client if is_client else common]
        )
        p.set_defaults(handler=handler)
        return p

    p = add("run", _cmd_run, "Run the daemon in the foreground.", is_client=False)
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="talk to the embedded sandbox Kontomatik API (no key, no network): for trials",
    )
    p = add("sandbox", _cmd_sandbox, "Serve only the sandbox Kontomatik API.", is_client=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--state",
        metavar="PATH",
        help="keep the sandbox's sessions, tokens and clock in this file across restarts",
    )
    p.add_argument(
        "--command-seconds",
        type=_seconds,
        default=SandboxConfig.command_seconds,
        metavar="S",
        help="how long a Default Import runs upstream (default %(default)g)",
    )
    p = add(
        "sandbox-ctl",
        _cmd_sandbox_ctl,
        "Test controls of the sandbox: status, mint, advance its clock, faults, kill tokens.",
        is_client=True,
    )
    sandbox_ctl.add_arguments(p)
    add("replay", _cmd_replay, "Re-parse the stored raw replies.", is_client=False)
    p = add(
        "migrate-store",
        _cmd_migrate_store,
        "Copy the SQLite database (AISD_DB_PATH) into an empty PostgreSQL database, with the "
        "daemon stopped, and verify the row counts.",
        is_client=False,
    )
    p.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help="postgresql://user@host:port/database (the password from the credential file "
        "aisd_database_password or PGPASSFILE, never in the URL)",
    )
    p = add(
        "simulate",
        _cmd_simulate,
        "Run the real planner and pipeline on a virtual clock against the in-process sandbox.",
        is_client=False,
    )
    p.add_argument("--days", type=_positive, default=30, help="virtual days to run (default 30)")
    p.add_argument("--tokens", type=_positive, default=10, help="consents to simulate (default 10)")

    p = add("submit", _cmd_submit, "Submit a consent from the SignIn widget.", is_client=True)
    p.add_argument("--owner", metavar="ID", help="the integrator's id of the bank-data owner")
    p.add_argument("--session-id", help="sessionId from the widget's onSuccess")
    p.add_argument(
        "--signature",
        help="sessionIdSignature from onSuccess (secret: visible to other local users in the "
        "process list; prefer the client library in production)",
    )
    p.add_argument(
        "--multiple-access-id",
        metavar="ID",
        help="options.multipleAccessId from onSuccess, for unattended refreshes (secret)",
    )
    p.add_argument("--target", help="the bank (target) the consent is for")
    p.add_argument("--refresh-until", metavar="DATE", help="stop refreshing after this date")
    p.add_argument("--max-imports", type=_positive, metavar="N", help="stop after N imports")
    p.add_argument(
        "--demo",
        action="store_true",
        help="mint a consent in the daemon's sandbox (`aisd run --sandbox`) and submit it; "
        "without --owner the sandbox picks a demo-... owner id",
    )
    p.add_argument(
        "--single", action="store_true", help="with --demo: a one-off consent without a token"
    )

    p = add("imports", _cmd_imports, "List imports, or show one.", is_client=True)
    p.add_argument("import_id", nargs="?", metavar="ID", help="show this import in full")
    p.add_argument("--owner", metavar="ID", help="only this owner's imports")
    p.add_argument("--token", metavar="ID", help="only this token's imports")
    p.add_argument("--state", choices=["queued", "running", "successful", "failed"])
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N, newest first")

    p = add("tokens", _cmd_tokens, "List tokens (multiple-access consents).", is_client=True)
    p.add_argument("--owner", metavar="ID", help="only this owner's tokens")
    p.add_argument("--state", choices=["active", "reauth_required", "revoked", "expired"])
    p.add_argument(
        "--explain",
        action="store_true",
        help="also show per token the quota per account and why a refresh is deferred",
    )

    p = add("revoke", _cmd_revoke, "Revoke a token, or all of an owner's.", is_client=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--token", metavar="ID", help="the token to revoke")
    group.add_argument("--owner", metavar="ID", help="revoke every token of this owner")

    p = add("refresh", _cmd_refresh, "Refresh a token now, if its quota allows.", is_client=True)
    p.add_argument("--token", metavar="ID", required=True, help="the token to refresh")

    p = add("events", _cmd_events, "Show the event feed.", is_client=True)
    p.add_argument("--after", type=_non_negative, default=0, metavar="N", help="after event N")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N events (max 1000)")
    p.add_argument("--follow", action="store_true", help="keep waiting for new events")

    p = add("data", _cmd_data, "Show an owner's merged accounts and transactions.", is_client=True)
    p.add_argument("--owner", metavar="ID", help="the owner (required unless --changes)")
    p.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        default="table",
        help="table for people, json, or csv (a header row, then one row per transaction)",
    )
    p.add_argument(
        "--changes", action="store_true", help="transactions changed since --cursor instead"
    )
    p.add_argument("--cursor", help="with --changes: the cursor of the previous call")

    p = add("billing", _cmd_billing, "Show billable cycles.", is_client=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--month", type=_month, metavar="YYYY-MM", help="report for this month")
    group.add_argument("--forecast", type=_positive, metavar="N", help="forecast the next N months")

    p = add("forget", _cmd_forget, "Revoke and erase everything about an owner.", is_client=True)
    p.add_argument("--owner", metavar="ID", required=True, help="the owner to forget")

    add("status", _cmd_status, "Show the daemon's health at a glance.", is_client=True)

    p = add(
        "backup",
        _cmd_backup,
        "Copy the database online (the daemon may run), verify the copy and print what it holds.",
        is_client=False,
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="a new file, or a directory: then aisd-<UTC time>.db inside it, keeping the newest "
        "AISD_BACKUP_KEEP",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = add(
        "restore",
        _cmd_restore,
        "Verify a backup and put it in place of the database (the daemon must be stopped).",
        is_client=False,
    )
    p.add_argument("path", metavar="PATH", help="the backup file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = add(
        "webhooks",
        _cmd_webhooks,
        "Show each webhook endpoint's cursor, lag, last success and last error.",
        is_client=True,
    )
    p.add_argument(
        "--redeliver-from",
        type=_positive,
        metavar="N",
        help="deliver every event from id N on again (moves the cursors back)",
    )
    p.add_argument("--endpoint", metavar="URL", help="with --redeliver-from: only this endpoint")
    return parser


# -- daemon-side commands -----------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=args.sandbox)
    if args.sandbox and settings.database_url is not None:
        # Each daemon would serve its own sandbox: the daemons sharing a database would each
        # hold consents the other's upstream has never seen.
        raise UsageError(
            "AISD_DATABASE_URL is set: `aisd run --sandbox` runs on SQLite only (each daemon "
            "would have its own sandbox); unset it for a trial"
        )
    configure_logging(settings)
    from aisd.daemon import main as daemon_main

    return daemon_main(settings, sandbox=args.sandbox)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    configure_logging(settings)
    from aisd.sandbox import DEFAULT_API_KEY, PortUnavailable, run_server

    key = settings.api_key.get_secret_value() if settings.api_key else DEFAULT_API_KEY
    try:
        run_server(
            args.host,
            args.port,
            api_key=key,
            config=SandboxConfig(command_seconds=args.command_seconds),
            state_path=Path(args.state) if args.state else None,
            announce=lambda text: print(text, flush=True),
        )
    except PortUnavailable as exc:
        _fail(f"sandbox: {exc}")
        return 1
    except ValueError as exc:
        raise UsageError(f"--state: {exc}") from None
    return 0


def _cmd_sandbox_ctl(args: argparse.Namespace) -> int:
    return sandbox_ctl.run(args, _client)


def _cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    if not settings.db_path.is_file():
        # Opening it would create an empty database and "replay" nothing successfully.
        raise UsageError(f"AISD_DB_PATH: {settings.db_path} does not exist; nothing to replay")
    configure_logging(settings)
    from aisd.replay import main as replay_main

    return replay_main(settings)


def _cmd_migrate_store(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    try:
        check_database_url(args.to)
    except ValueError as exc:
        raise UsageError(f"--to {exc}") from None
    if not settings.db_path.is_file():
        raise UsageError(f"AISD_DB_PATH: {settings.db_path} is not a SQLite database file")
    from aisd.instance import InstanceLocked, instance_lock
    from aisd.store.postgresql import copy_sqlite

    password = settings.database_password
    try:
        # The daemon holds this lock while it runs: the copy needs it stopped.
        with instance_lock(settings.db_path):
            counts = copy_sqlite(
                settings.db_path,
                args.to,
                password=None if password is None else password.get_secret_value(),
            )
    except InstanceLocked:
        _fail("the daemon is running on this database: stop it first")
        return 1
    for table, (rows, _) in counts.items():
        print(f"{table:24} {rows:>10} rows copied and counted")
    print(f"copied {sum(n for n, _ in counts.values())} rows; set AISD_DATABASE_URL to use it")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    configure_logging(settings)
    from aisd.simulate import main as simulate_main

    return simulate_main(settings, days=args.days, tokens=args.tokens)


def _sqlite_only(settings: Settings, command: str) -> None:
    """Backups and restores are of the SQLite file; with PostgreSQL they belong to its tools."""
    if settings.database_url is not None:
        raise UsageError(
            f"AISD_DATABASE_URL is set: `aisd {command}` works on the SQLite database only; "
            "back PostgreSQL up and restore it with its own tools (pg_dump, base backups, "
            "WAL archiving)"
        )


def _cmd_backup(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    _sqlite_only(settings, "backup")
    from aisd.backup import BackupError, take_backup

    try:
        summary = take_backup(
            settings.db_path, Path(args.path), keep=settings.backup_keep, now=_now()
        )
    except BackupError as exc:
        _fail(f"backup failed: {exc}")
        return 1
    print(json.dumps(summary.as_json(), indent=2) if args.json else f"backup {summary.describe()}")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file, sandbox=True)
    _sqlite_only(settings, "restore")
    from aisd.backup import BackupError, restore

    try:
        done = restore(Path(args.path), settings.db_path, now=_now())
    except BackupError as exc:
        _fail(f"restore refused, nothing was replaced: {exc}")
        return 1
    aside, heads = done.previous, done.feed_heads
    if args.json:
        print(
            json.dumps(
                {
                    **done.summary.as_json(),
                    "previous": str(aside) if aside else None,
                    "eventIdsAfter": heads["event_id"] if heads else None,
                },
                indent=2,
            )
        )
        return 0
    print(f"restored {done.summary.describe()}")
    print(f"previous database kept at {aside}" if aside else "there was no previous database")
    if heads is not None:
        print(f"new events take ids after {heads['event_id']}, the previous database's last")
    elif aside is not None:
        # Without the previous heads, ids after the backup's last event are handed out
        # again: receivers that saw them must be told (README, Backups and restore).
        print(
            "warning: the previous database could not be read; event ids after the backup's "
            "last one will be handed out again",
            file=sys.stderr,
        )
    return 0


# -- socket clients -----------------------------------------------------------------------------


def socket_candidates() -> list[Path]:
    """Where to look for the daemon when no socket is configured, in order:
    ``$RUNTIME_DIRECTORY/aisd.sock``, ``/run/aisd/aisd.sock``, ``./aisd.sock``."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    found = [Path(runtime) / "aisd.sock"] if runtime else []
    found += [_INSTALLED_SOCKET, Path("aisd.sock")]
    return list(dict.fromkeys(found))


def _answers(path: Path) -> bool:
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(_PROBE_SECONDS)
            probe.connect(str(path))
    except OSError:
        return False
    return True


def _client(args: argparse.Namespace) -> Client:
    if args.socket:
        return Client(args.socket, timeout=args.timeout)
    settings = load_settings(args.env_file, sandbox=True)
    if "socket_path" in settings.model_fields_set:
        return Client(settings.socket_path, timeout=args.timeout)
    candidates = socket_candidates()
    for path in candidates:
        if _answers(path):
            return Client(path, timeout=args.timeout)
    tried = ", ".join(str(path) for path in candidates)
    raise DaemonUnavailable(candidates[-1], f"no daemon answered at any of {tried}")


def _show(args: argparse.Namespace, result: Any, render: Callable[[Any], str]) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render(result))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.demo:
        if args.session_id or args.signature or args.multiple_access_id:
            raise UsageError("submit --demo mints its own session; drop --session-id and friends")
        mint: dict[str, Any] = {"multipleAccess": not args.single}
        if args.owner:
            mint["ownerExternalId"] = args.owner
        minted = client.call("sandbox.mint", mint)
        result = client.submit_consent(
            minted["ownerExternalId"],
            minted["sessionId"],
            minted["sessionIdSignature"],
            multiple_access_id=minted.get("multipleAccessId"),
            target=args.target or minted.get("target"),
            refresh_until=args.refresh_until,
            max_imports=args.max_imports,
        )
    else:
        if args.single:
            raise UsageError("--single only goes with --demo")
        missing = [
            flag
            for flag, value in (
                ("--owner", args.owner),
                ("--session-id", args.session_id),
                ("--signature", args.signature),
            )
            if not value
        ]
        if missing:
            raise UsageError(f"submit needs {', '.join(missing)} (or --demo)")
        result = client.submit_consent(
            args.owner,
            args.session_id,
            args.signature,
            multiple_access_id=args.multiple_access_id,
            target=args.target,
            refresh_until=args.refresh_until,
            max_imports=args.max_imports,
        )
    return _show(
        args, result, lambda r: f"import {r.get('importId')}  token {r.get('tokenId') or '-'}"
    )


def _cmd_imports(args: argparse.Namespace) -> int:
    client = _client(args)
    now = _now()
    if args.import_id:
        if args.owner or args.token or args.state or args.limit:
            raise UsageError("imports ID shows one import; filters go without an ID")
        return _show(args, client.get_import(args.import_id), lambda r: fmt.key_values(r, now))
    result = client.list_imports(
        owner_external_id=args.owner, token_id=args.token, state=args.state, limit=args.limit
    )
    return _show(args, result, lambda r: fmt.render_imports(r, now))


def _cmd_tokens(args: argparse.Namespace) -> int:
    result = _client(args).list_tokens(
        owner_external_id=args.owner, state=args.state, explain=args.explain
    )
    now = _now()
    return _show(args, result, lambda r: fmt.render_tokens(r, now, explain=args.explain))


def _cmd_revoke(args: argparse.Namespace) -> int:
    result = _client(args).revoke(token_id=args.token, owner_external_id=args.owner)
    return _show(args, result, fmt.render_revoked)


def _cmd_refresh(args: argparse.Namespace) -> int:
    result = _client(args).refresh(args.token)
    return _show(args, result, lambda r: f"import {r.get('importId')} started")


def _cmd_events(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.follow:
        result = client.events(args.after, args.limit)
        return _show(args, result, lambda r: fmt.render_events(r.get("events", []), _now()))
    after = args.after
    while True:
        result = client.events(after, args.limit)
        for event in result.get("events", []):
            line = json.dumps(event, ensure_ascii=False) if args.json else fmt.event_line(event)
            print(line, flush=True)
        if result.get("next", after) == after:
            time.sleep(_FOLLOW_INTERVAL_SECONDS)
        after = result.get("next", after)


def _cmd_data(args: argparse.Namespace) -> int:
    client = _client(args)
    as_json = args.json or args.format == "json"
    if args.changes:
        result = client.changes(args.cursor, owner_external_id=args.owner)
        if as_json:
            print(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            print(fmt.render_changes(result))
        return 0
    if args.cursor:
        raise UsageError("--cursor only goes with --changes")
    if not args.owner:
        raise UsageError("data needs --owner (or --changes)")
    result = client.owner_data(args.owner)
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        sys.stdout.write(fmt.transactions_csv(result))
    else:
        print(fmt.render_data(result, _now()))
    return 0


def _cmd_billing(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.month:
        return _show(args, client.billing_report(args.month), fmt.render_billing)
    result = client.call("billing.forecast", {"months": args.forecast})
    now = _now()
    return _show(args, result, lambda r: fmt.render_generic(r, now))


def _cmd_forget(args: argparse.Namespace) -> int:
    result = _client(args).forget(args.owner)
    return _show(
        args,
        result,
        lambda r: f"revoked {r.get('tokensRevoked')} token(s), deleted {r.get('rowsDeleted')} rows",
    )


def _cmd_status(args: argparse.Namespace) -> int:
    result = _client(args).status()
    now = _now()
    return _show(args, result, lambda r: fmt.render_status(r, now))


def _cmd_webhooks(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.redeliver_from is None:
        if args.endpoint:
            raise UsageError("--endpoint only goes with --redeliver-from")
        result = client.webhooks()
    else:
        result = client.redeliver(args.redeliver_from, args.endpoint)
    now = _now()
    return _show(args, result, lambda r: fmt.render_webhooks(r, now))
