"""The OpenSSH fixture works without root: a developer's unprivileged test run gets an SFTP
server as itself. As root (CI) this is checked in a child process running as an ordinary user."""

from __future__ import annotations

import io
import json
import os
import pwd
import subprocess
import sys
import sysconfig
from pathlib import Path

import paramiko
import pytest

from tests.servers.sshd import _ensure_user, sshd_server

pytestmark = pytest.mark.real

PROJECT = Path(__file__).resolve().parents[2]
#: An ordinary account for the root run (created like the fixture's SFTP user).
DEVELOPER = "kcbus-dev"

_ROUND_TRIP = """
import getpass, io, json, paramiko
from tests.servers.sshd import sshd_server
with sshd_server() as server:
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(server.host, port=server.port, username=server.user,
                   key_filename=str(server.private_key), look_for_keys=False,
                   allow_agent=False, timeout=10)
    try:
        client.open_sftp().putfo(io.BytesIO(b"probe"), str(server.root / "probe.txt"))
        stored = (server.root / "probe.txt").read_bytes().decode()
    finally:
        client.close()
    print(json.dumps({"me": getpass.getuser(), "user": server.user, "port": server.port,
                      "stored": stored}))
"""


def _as(user: pwd.struct_passwd, python: str, code: str) -> subprocess.CompletedProcess[str]:
    paths = {str(PROJECT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            python,
            "-c",
            code,
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": os.pathsep.join(paths)},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _python_for(user: pwd.struct_passwd) -> str:
    """An interpreter ``user`` may run: ours, or the system's of the same version (ours may sit
    below a root-only folder, e.g. pyenv under /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        if _as(user, candidate, "import paramiko, cryptography").returncode == 0:
            return candidate
    pytest.fail(f"no Python {version} with paramiko that {user.pw_name} may run", pytrace=False)


def test_sshd_serves_sftp_to_the_unprivileged_user_running_it() -> None:
    if os.geteuid() != 0:  # a developer's run: the fixture itself must do
        with sshd_server() as server:
            assert server.user == pwd.getpwuid(os.geteuid()).pw_name
            client = paramiko.SSHClient()
            client.load_host_keys(str(server.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                server.host,
                port=server.port,
                username=server.user,
                key_filename=str(server.private_key),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            try:
                client.open_sftp().putfo(io.BytesIO(b"probe"), str(server.root / "probe.txt"))
            finally:
                client.close()
            assert (server.root / "probe.txt").read_bytes() == b"probe"
        return
    developer = _ensure_user(DEVELOPER)
    result = _as(developer, _python_for(developer), _ROUND_TRIP)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["me"] == answer["user"] == DEVELOPER  # sshd ran as the developer, for them
    assert answer["port"] > 1024 and answer["stored"] == "probe"
