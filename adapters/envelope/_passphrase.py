"""Where a keystore's passphrase comes from, outside the code that holds it.

In this order: ``KCBUS_KEYSTORE_PASSPHRASE``; the file ``KCBUS_KEYSTORE_PASSPHRASE_FILE``
names (a systemd credential, a Docker or Kubernetes secret: owner-readable only); a prompt
when stdin is a terminal. A caller may pass its own source instead (a string, or a callable
asked only when a private key is first needed: the Airflow layer reads its secrets backend).
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from adapters.envelope._errors import KeystoreError

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "PassphraseSource",
    "passphrase_from_environment",
    "read_passphrase_file",
]

PASSPHRASE_ENV: Final = "KCBUS_KEYSTORE_PASSPHRASE"
PASSPHRASE_FILE_ENV: Final = "KCBUS_KEYSTORE_PASSPHRASE_FILE"
PassphraseSource = str | Callable[[], str] | None

#: A passphrase file is a few bytes; anything large is the wrong file.
_MAX_PASSPHRASE_FILE: Final = 64 * 1024


def read_passphrase_file(path: Path) -> str:
    """The passphrase in ``path`` (one trailing newline dropped). The file must be a regular
    file readable by its owner only: a secret that every local user can read protects nothing."""
    try:
        # O_NONBLOCK: opening a FIFO (or a device) for reading would otherwise wait for a
        # writer forever, before the check below could refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise KeystoreError(
            f"cannot read passphrase file {path} ({PASSPHRASE_FILE_ENV}): {exc.strerror}"
        ) from exc
    # Checked on the open file, so a file swapped after the check cannot slip through.
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif mode & 0o044:
        problem = (
            f"is readable by group or others (mode {mode:04o}): make it 0600 or 0400 "
            "(Kubernetes: defaultMode 0400; Docker: mode 0400)"
        )
    if problem is not None:
        os.close(fd)
        raise KeystoreError(f"passphrase file {path} {problem}")
    os.set_blocking(fd, True)  # a regular file: back to plain reads
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_PASSPHRASE_FILE + 1)
    if len(data) > _MAX_PASSPHRASE_FILE:
        raise KeystoreError(f"passphrase file {path} is larger than 64 KiB: not a passphrase")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise KeystoreError(f"passphrase file {path} is not UTF-8 text") from exc
    # Editors and `echo` add a newline; secret stores usually do not. Only that one goes.
    return text.removesuffix("\n").removesuffix("\r")


def passphrase_from_environment(keystore: Path | None = None, *, prompt: bool = True) -> str | None:
    """The passphrase from ``KCBUS_KEYSTORE_PASSPHRASE``, else from the file named by
    ``KCBUS_KEYSTORE_PASSPHRASE_FILE``, else (if ``prompt`` and stdin is a terminal) asked
    for; ``None`` when there is no source. Both variables set at once is an error: which one
    wins would be a guess."""
    value = os.environ.get(PASSPHRASE_ENV)
    file = os.environ.get(PASSPHRASE_FILE_ENV)
    if value and file:
        raise KeystoreError(f"both {PASSPHRASE_ENV} and {PASSPHRASE_FILE_ENV} are set: keep one")
    if value:
        return value
    if file:
        return read_passphrase_file(Path(file))
    if prompt and sys.stdin is not None and sys.stdin.isatty():
        where = "" if keystore is None else f" {keystore}"
        return getpass.getpass(f"passphrase for keystore{where}: ")
    return None
