"""One real PostgreSQL server for a test session: initdb and pg_ctl as a non-root user, in a
directory of its own, one migrated template database cloned per test.

``initdb`` refuses to run as root (CI runs as root): the server then runs as ``postgres``
(``runuser``) or ``nobody`` (``setpriv``). pytest's ``tmp_path`` lives under a mode-0700
directory the server's user cannot enter, so the data directory is a ``mkdtemp`` of its own,
mode 0755, owned by that user. Unless ``durable``, that directory is in memory (``/dev/shm``)
when it has room: a database created per test is a file copy, and on a shared disk each one
waited about a second for the disk.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import psycopg

from aisd.store.postgresql import connection_kwargs, migrate

__all__ = ["PostgresServer", "PostgresUnavailable", "memory_dir"]

TEMPLATE = "aisd_template"
SUPERUSER = "aisd"
MEMORY_DIR = Path("/dev/shm")
# The suite's databases take about 1 GiB and its tmp_path files a few hundred MiB; a smaller
# /dev/shm (a container's default is 64 MiB) is left alone.
MEMORY_NEEDED_BYTES = 4 << 30


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be had on this machine; the message says why."""


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise PostgresUnavailable("pg_config not found (make sysdeps installs Debian postgresql)")
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    bindir = Path(out.stdout.strip())
    if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
        raise PostgresUnavailable(f"no initdb/pg_ctl in {bindir} (install Debian postgresql)")
    return bindir


def _runner() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs a server binary as a non-root user, and that user."""
    if os.geteuid() != 0:
        return [], None
    for name, prefix in (
        ("postgres", ["runuser", "-u", "postgres", "--"]),
        ("nobody", ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]),
    ):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which(prefix[0]) is not None:
            return prefix, user
    raise PostgresUnavailable("running as root with neither a postgres nor a nobody user")


def memory_dir() -> Path | None:
    """``/dev/shm`` when it is writable and has room for the suite's scratch files, else None."""
    if not MEMORY_DIR.is_dir() or not os.access(MEMORY_DIR, os.W_OK):
        return None
    stats = os.statvfs(MEMORY_DIR)
    return MEMORY_DIR if stats.f_bavail * stats.f_frsize >= MEMORY_NEEDED_BYTES else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 (trust authentication).

    Args:
        durable: keep PostgreSQL's durability settings (fsync, synchronous commit) as a
            production server has them; off by default, for the tests' speed.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self._durable = durable
        self._bin = _bindir()
        self._prefix, self._user = _runner()
        self.root = Path(tempfile.mkdtemp(prefix="aisd-pg-", dir=None if durable else memory_dir()))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._names = itertools.count(1)
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, args: Sequence[str]) -> None:
        out = subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, check=False, timeout=60
        )
        if out.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {out.stderr.strip()[-500:]}")

    def init(self) -> None:
        """initdb, start, and a migrated template database."""
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        # A thread of its own: the first test to ask may be running an event loop already.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, self._migrate_template).result()

    async def _migrate_template(self) -> None:
        kwargs = connection_kwargs(self.url(TEMPLATE), password=None)
        async with await psycopg.AsyncConnection.connect(**kwargs) as conn:
            await migrate(conn)

    def start(self) -> None:
        """Start (or start again after :meth:`stop`) and wait until it accepts connections.
        Durability settings are off unless ``durable``: the tests prove aisd's behaviour, not
        PostgreSQL's."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
        if not self._durable:
            options += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        options += "-c max_connections=200"
        self._run(
            [
                str(self._bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are ended, as at a restart)."""
        self._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def url(self, database: str) -> str:
        """A libpq URL of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh migrated database cloned from the template; returns its URL."""
        name = f"aisd_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            # FILE_COPY (PostgreSQL 15 on) copies the template's files instead of writing
            # each of its pages through the WAL: a few times faster for a small template.
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}{strategy}")
        return self.url(name)

    def close(self) -> None:
        """Stop the server and delete its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
