"""Benchmarks of several daemons on one PostgreSQL: failover time, slot use, intake.

Usage::

    python bench/cluster_bench.py failover [--rounds 5]
    python bench/cluster_bench.py slots [--consents 32] [--seconds 8]
    python bench/cluster_bench.py intake [--clients 50] [--requests 2000] [--durable]

Each starts a throwaway PostgreSQL server (initdb/pg_ctl as the tests do, durability settings
off), one sandbox served over HTTP on 127.0.0.1, and real daemon processes (``python -m aisd
run``) with ``AISD_DATABASE_URL`` pointing at one database. Figures come from the sandbox's own
records and the daemons' ``daemon.status``; nothing is asserted about time.

- ``failover``: per round, daemon A alone takes a consent and drives its command
  (``command_seconds`` 30); once the sandbox saw A's first poll, B starts and A gets SIGKILL.
  The time from the kill to the sandbox's next poll of that command (sent by B, which adopts
  it) is one sample; B then stops and A starts again for the next round. Prints every sample,
  the median and the maximum.
- ``slots``: a backlog of consents with commands of ``--seconds`` is drained by one daemon and
  then, on a fresh database, by two; ``daemon.status`` of each is sampled every 0.2 s. Slot use
  is the mean of (commands running across daemons) / 8 from the first command to the last
  import's end. Also prints the sandbox's peak of running commands (≤ 8 across daemons).
- ``intake``: ``bench/intake_bench.py``'s clients against one daemon on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

# The tests' PostgreSQL and daemon harness, and the intake script's clients.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intake_bench import closed_loop

from tests.e2e.conftest import (
    DaemonProcess,
    SandboxServer,
    daemon_environment,
    daemon_process,
    serving_sandbox,
)
from tests.postgres_server import PostgresServer

LIMIT = 8


@contextmanager
def postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A throwaway server with a migrated template (``durable``: fsync and synchronous
    commit on, as in production)."""
    server = PostgresServer(durable=durable)
    try:
        server.init()
        yield server
    finally:
        server.close()


def daemons(
    stack: ExitStack, root: Path, box: SandboxServer, url: str, n: int
) -> list[DaemonProcess]:
    """``n`` daemon processes (not started) on database ``url``."""
    out = []
    for i in range(n):
        directory = root / f"d{i}"
        directory.mkdir()
        env = daemon_environment(directory, box)
        env["AISD_DATABASE_URL"] = url
        env["AISD_MAX_RUNNING_COMMANDS"] = str(LIMIT)
        out.append(stack.enter_context(daemon_process(directory, env)))
    return out


def submit(daemon: DaemonProcess, box: SandboxServer, owner: str) -> str:
    """Mint a consent in the sandbox and submit it; returns the import id."""
    consent = box.mint(owner)
    ids = daemon.client.submit_consent(
        consent.owner_external_id,
        consent.session_id,
        consent.signature,
        multiple_access_id=consent.multiple_access_id,
    )
    import_id: str = ids["importId"]
    return import_id


def failover(rounds: int) -> None:
    """SIGKILL of the polling daemon → the survivor's next poll of the same command."""
    samples: list[float] = []
    with postgres() as server, serving_sandbox() as box, ExitStack() as stack:
        box.configure(command_seconds=30.0)
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        a, b = daemons(stack, root, box, server.new_database(), 2)
        for n in range(rounds):
            # A alone when the consent arrives, so that A (not B) drives its command.
            a.start()
            import_id = submit(a, box, f"failover-{n}")
            command = None
            deadline = time.monotonic() + 60
            while command is None and time.monotonic() < deadline:
                view = a.client.get_import(import_id)
                polls = box.stats().polls_by_command.get(view.get("commandId") or "", [])
                if polls:
                    command = view["commandId"]
                time.sleep(0.05)
            assert command is not None, "the command was never polled"
            b.start()
            seen = len(box.stats().polls_by_command[command])
            a.kill(signal.SIGKILL)
            killed = time.monotonic()
            while len(box.stats().polls_by_command[command]) <= seen:
                time.sleep(0.02)
            samples.append(time.monotonic() - killed)
            b.terminate()
            print(f"round {n + 1}: next poll {samples[-1]:.2f} s after SIGKILL", flush=True)
    print(
        f"failover over {rounds} rounds: median {statistics.median(samples):.2f} s, "
        f"max {max(samples):.2f} s (lease 6 s, heartbeat 1.2 s, polls 2-3 s apart)"
    )


def drain(count: int, consents: int, seconds: float) -> tuple[float, int, float]:
    """Slot use, sandbox peak and drain time with ``count`` daemons on a fresh database."""
    with postgres() as server, serving_sandbox() as box, ExitStack() as stack:
        box.configure(command_seconds=seconds)
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        procs = daemons(stack, root, box, server.new_database(), count)
        for proc in procs:
            proc.start()
        ids = [submit(procs[n % count], box, f"slots-{n}") for n in range(consents)]
        samples: list[int] = []
        began: float | None = None
        while True:
            running = sum(p.client.status()["runningCommands"] for p in procs)
            if running and began is None:
                began = time.monotonic()
            if began is not None:
                samples.append(running)
            views = [procs[0].client.get_import(i) for i in ids]
            if all(v["state"] in ("successful", "failed") for v in views):
                break
            time.sleep(0.2)
        assert began is not None
        took = time.monotonic() - began
        return statistics.fmean(samples) / LIMIT, box.stats().max_running, took


def slots(consents: int, seconds: float) -> None:
    """Slot use of one daemon and of two on one database, against the 8-command limit."""
    for count in (1, 2):
        use, peak, took = drain(count, consents, seconds)
        print(
            f"{count} daemon(s), D = {seconds:g} s, {consents} consents: slot use {use:.2f}, "
            f"sandbox peak {peak} running, drained in {took:.1f} s",
            flush=True,
        )


def intake(clients: int, requests: int, *, durable: bool) -> None:
    """consent.submit from many clients against a daemon on PostgreSQL."""
    with postgres(durable=durable) as server, serving_sandbox() as box, ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        [daemon] = daemons(stack, root, box, server.new_database(), 1)
        # Commands that never end: the imports wait upstream, the intake is what is measured.
        box.configure(command_seconds=3600.0)
        daemon.start()
        socket_path = Path(daemon.env["AISD_SOCKET_PATH"])
        run = asyncio.run(
            closed_loop(socket_path, clients, requests, "pg", "PostgreSQL intake", daemon.pid)
        )
        print(f"errors: {dict(run.errors) or 'none'}")
        print(run.line())


def main(argv: list[str] | None = None) -> None:
    """Run the chosen benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("failover")
    p.add_argument("--rounds", type=int, default=5)
    p = sub.add_parser("slots")
    p.add_argument("--consents", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p = sub.add_parser("intake")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument(
        "--durable", action="store_true", help="the server with fsync and synchronous commit on"
    )
    args = parser.parse_args(argv)
    os.environ.pop("AISD_DATABASE_URL", None)
    if args.what == "failover":
        failover(args.rounds)
    elif args.what == "slots":
        slots(args.consents, args.seconds)
    else:
        intake(args.clients, args.requests, durable=args.durable)


if __name__ == "__main__":
    main()
