"""A private PostgreSQL cluster (15 on Debian bookworm) on 127.0.0.1 for tests and benchmarks.

``initdb`` and ``pg_ctl`` run as the ``postgres`` system user (PostgreSQL refuses to run as
root) in a base directory of their own, on a free port, with the unix socket in that directory,
trust authentication for local connections only. Durability settings are off (``fsync``,
``synchronous_commit``, ``full_page_writes``): the cluster is thrown away after the session, and
tests must not wait for disk flushes. The postmaster is stopped by its PID (SIGINT = PostgreSQL's
"fast" shutdown).
"""

from __future__ import annotations

import itertools
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.servers._process import (
    ServerStartError,
    Watchdog,
    free_port,
    make_base_dir,
    need_executable,
    remove_base_dir,
    wait_pid_gone,
)

__all__ = ["PostgresServer", "postgres_cluster"]

def _bin_dir() -> Path:
    """The newest installed PostgreSQL (Debian: /usr/lib/postgresql/<major>/bin; 15 on
    bookworm)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


_BIN = _bin_dir()
_USER = "postgres"
_counter = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster; ``url`` points at a database created for this session.

    ``str(server)`` is that URL, so the object can be passed where a URL string is expected.
    """

    host: str
    port: int
    user: str
    socket_dir: Path
    data_dir: Path
    pid: int
    database: str

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` in this cluster."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, prefix: str = "kcbus_test") -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        _create_database(self.host, self.port, self.user, name)
        return self.url_for(name)

    def __str__(self) -> str:
        return self.url


def _create_database(host: str, port: int, user: str, name: str) -> None:
    import psycopg  # only needed once a cluster runs

    with psycopg.connect(host=host, port=port, user=user, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: [a-z0-9_] only


def _run_as_postgres(args: list[str], log: Path) -> None:
    entry = pwd.getpwnam(_USER)
    with log.open("ab") as out:
        result = subprocess.run(
            args, user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False, timeout=120,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(log.parent)},
        )
    if result.returncode != 0:
        from tests.servers._process import log_tail

        raise ServerStartError(f"{Path(args[0]).name} failed ({result.returncode}): "
                               f"{log_tail(log)} | {log_tail(log.parent / 'server.log')}")


@contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """Create and start a cluster; stop it by PID and remove its files on exit."""
    need_executable(_BIN / "initdb", "postgresql")
    try:
        entry = pwd.getpwnam(_USER)
    except KeyError:
        raise ServerStartError(f"system user {_USER!r} missing: install postgresql") from None
    base = make_base_dir("kcbus-postgres-")
    os.chown(base, entry.pw_uid, entry.pw_gid)
    data = base / "data"
    log = base / "postgres.log"
    port = free_port()
    pid: int | None = None
    watchdog = Watchdog(base)
    try:
        _run_as_postgres([str(_BIN / "initdb"), "-D", str(data), "-U", _USER, "-A", "trust",
                          "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
                         log)
        options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        # The server log is written by the postmaster (as postgres), not by this process.
        _run_as_postgres([str(_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
                          "-w",
                          "-t", "60", "-o", options, "start"], log)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        watchdog.pid(pid, "INT")  # SIGINT: PostgreSQL's fast shutdown
        _create_database("127.0.0.1", port, _USER, "kcbus")
        yield PostgresServer(host="127.0.0.1", port=port, user=_USER, socket_dir=base,
                             data_dir=data, pid=pid, database="kcbus")
    finally:
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            if not wait_pid_gone(pid, 30):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_pid_gone(pid, 10)
        watchdog.stop()
        remove_base_dir(base)
