"""A private OpenSSH server on 127.0.0.1 that offers SFTP to one test user, key login only.

Set-up, all under the server's own base directory: an Ed25519 host key, the client's Ed25519 key
pair, ``authorized_keys``, a ``known_hosts`` line for ``[127.0.0.1]:<port>`` (clients keep
host-key checking on), an ``sshd_config`` (password and keyboard-interactive logins off,
``ForceCommand internal-sftp``, no forwarding) and the SFTP data root owned by the test user.

Two modes, chosen by who runs the tests:

* as root (CI): the test user (``kcbus-sftp``) is created with ``useradd`` when missing; its
  password field is ``*`` (no password, but not "locked", which sshd without PAM refuses for key
  logins too). sshd separates privileges as in production;
* as any other user: sshd runs as that user (a non-root sshd can only log in the user it runs
  as), so the SFTP user is the current user and nothing needs root: no ``useradd``, no
  ``/run/sshd``, no ``chown``. Host key, ``authorized_keys``, port (a free high one) are the
  server's own as in the root mode.

``drop_connections()`` kills the per-connection sshd processes (children of the listener) by PID:
the client sees its connection cut mid-transfer, as when a partner's link fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.servers._process import (
    ServerStartError,
    Watchdog,
    free_port,
    kill_group,
    make_base_dir,
    need_executable,
    remove_base_dir,
    wait_for,
)

__all__ = ["SFTP_USER", "SshServer", "sshd_server"]

SFTP_USER = "kcbus-sftp"
_SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    private_key: Path
    known_hosts: Path
    root: Path
    base: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, path: str | Path = "") -> str:
        """``sftp://user@host:port/<absolute path>`` for a directory under the data root."""
        target = self.root / path
        return f"sftp://{self.user}@{self.host}:{self.port}{target}"

    def connections(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener)."""
        if self._proc is None:
            return []
        return _children(self._proc.pid)

    def drop_connections(self) -> int:
        """Cut every open SSH connection from the server side; returns how many were cut.

        Each connection is a privileged monitor plus the user's unprivileged session process
        (one process when sshd runs unprivileged); all hold the socket, so the whole subtree
        is killed.
        """
        cut = 0
        for pid in self.connections():
            for victim in [pid, *_descendants(pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            cut += 1
        return cut

    def chown_to_user(self, path: Path) -> None:
        """Give a file or directory created by the test (as root) to the SFTP user; unprivileged,
        the test already is the SFTP user and this changes nothing."""
        if not _privileged():
            return
        entry = pwd.getpwnam(self.user)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def stop(self) -> None:
        if self._proc is not None:
            kill_group(self._proc, timeout=5)
            self._proc = None


def _children(parent: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def _descendants(parent: int) -> list[int]:
    found: list[int] = []
    for child in _children(parent):
        found += [child, *_descendants(child)]
    return found


def _privileged() -> bool:
    return os.geteuid() == 0


def _sftp_user() -> pwd.struct_passwd:
    """The account clients log in as: ``kcbus-sftp`` as root, else the current user."""
    if _privileged():
        return _ensure_user(SFTP_USER)
    return pwd.getpwuid(os.geteuid())


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", name],
            capture_output=True, check=False,
        )
        # 9 = "user already exists": another test session created it in the meantime.
        if result.returncode not in (0, 9):
            raise ServerStartError(
                f"useradd {name} failed: {result.stderr.decode(errors='replace').strip()}"
            ) from None
    # "*" = no password login, yet not a locked account ("!"), which sshd refuses outright.
    subprocess.run(["usermod", "-p", "*", name], capture_output=True, check=False)
    return pwd.getpwnam(name)


def _write_key(path: Path) -> str:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@contextmanager
def sshd_server() -> Iterator[SshServer]:
    """Start sshd with SFTP for the test user; stop it and remove its files on exit."""
    need_executable(_SSHD, "openssh-server")
    user = _sftp_user()
    base = make_base_dir("kcbus-sshd-")
    port = free_port()
    host_pub = _write_key(base / "ssh_host_ed25519_key")
    client_pub = _write_key(base / "client_ed25519_key")
    (base / "authorized_keys").write_text(client_pub + "\n")
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    root = base / "data"
    root.mkdir()
    if _privileged():
        os.chown(root, user.pw_uid, user.pw_gid)
    config = base / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {base / "ssh_host_ed25519_key"}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {base / "authorized_keys"}
AllowUsers {user.pw_name}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
# the base dir sits below world-writable /tmp, which StrictModes would refuse
StrictModes no
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 100:30:200
MaxSessions 64
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel INFO
""")
    if _privileged():
        # sshd's privilege separation needs this directory (normally made by the systemd unit).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    test = subprocess.run([str(_SSHD), "-t", "-f", str(config)], capture_output=True, check=False)
    if test.returncode != 0:
        remove_base_dir(base)
        raise ServerStartError(f"sshd -t: {test.stderr.decode(errors='replace').strip()}")
    log = base / "sshd.log"
    server = SshServer(host="127.0.0.1", port=port, user=user.pw_name,
                       private_key=base / "client_ed25519_key",
                       known_hosts=base / "known_hosts", root=root, base=base)
    watchdog = Watchdog(base)
    try:
        with log.open("ab") as out:
            # -D: stay in the foreground (our child, stopped by PID); -e: log to stderr.
            server._proc = subprocess.Popen(
                [str(_SSHD), "-D", "-e", "-f", str(config)], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        watchdog.group(server._proc.pid)
        wait_for(lambda: _greets(port), timeout=20, what="sshd", proc=server._proc, log=log)
        yield server
    finally:
        server.stop()
        watchdog.stop()
        remove_base_dir(base)
