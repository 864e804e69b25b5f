"""Process plumbing shared by the server launchers: free ports, readiness waits, stop by PID.

Invariants: a launcher never leaves a process behind that it started (each server runs in its
own session/process group and is stopped by that PID, waiting until it is gone), and every
failure to start raises :class:`ServerStartError` carrying the reason (log tail included), which
the fixtures turn into a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ServerStartError",
    "Watchdog",
    "free_port",
    "group_members",
    "kill_group",
    "log_tail",
    "make_base_dir",
    "need_executable",
    "pid_alive",
    "remove_base_dir",
    "wait_for",
    "wait_pid_gone",
    "wait_port",
]


class ServerStartError(RuntimeError):
    """A real test server could not be started; the message says why."""


def need_executable(path: str | Path, package: str) -> Path:
    p = Path(path)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ServerStartError(
            f"{p} not found: install the Debian package {package!r} (scripts/install-test-servers)"
        )
    return p


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_base_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that other local users can traverse.

    Servers that drop privileges (PostgreSQL as ``postgres``, sshd's session as the test user)
    cannot enter pytest's per-user 0700 tmp dirs, hence a separate 0755 directory.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def remove_base_dir(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(check: Callable[[], bool], *, timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until true; fail early if ``proc`` died, with the log tail."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise ServerStartError(f"{what}: process exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            tail = log_tail(log) if log else ""
            raise ServerStartError(f"{what}: not ready after {timeout:.0f} s: {tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def wait_port(port: int, *, timeout: float, what: str,
              proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    def accepting() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepting, timeout=timeout, what=what, proc=proc, log=log)


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_group(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """Stop a server started with ``start_new_session=True``: SIGTERM its group, then SIGKILL."""
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp ... (proc(5))
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


_WATCHDOG = r"""
owner=$1; targets=$2; base=$3
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
stop() {
    [ -f "$targets" ] || return 0
    while read -r kind id sig; do
        case $kind in
            group) kill -s "$1" -- "-$id" 2>/dev/null ;;
            pid) kill -s "${2:-$sig}" "$id" 2>/dev/null ;;
        esac
    done < "$targets"
}
stop TERM ""
sleep 5
stop KILL KILL
rm -rf "$base"
"""


class Watchdog:
    """Stops a server even when the test process dies without its teardown (SIGKILL, timeout).

    A small shell process, in its own session, waits for the owner (this process) to end and
    then stops every process group and PID listed in ``<base>/.watchdog`` and removes the base
    directory. On a normal teardown the launcher stops the servers itself, then the watchdog
    (by PID).
    """

    def __init__(self, base: Path) -> None:
        self.targets = base / ".watchdog"
        self.targets.write_text("")
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "watchdog", str(os.getpid()), str(self.targets),
             str(base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def group(self, pgid: int) -> None:
        with self.targets.open("a") as out:
            out.write(f"group {pgid} TERM\n")

    def pid(self, pid: int, sig: str = "TERM") -> None:
        with self.targets.open("a") as out:
            out.write(f"pid {pid} {sig}\n")

    def stop(self) -> None:
        kill_group(self._proc, timeout=5)
