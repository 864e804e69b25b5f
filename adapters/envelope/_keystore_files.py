"""How the keystore modules put files down: atomic writes, and the names they share.

A file is replaced by writing a temporary beside it, fsyncing it, renaming it over the old one
and fsyncing the directory: a reader sees the old file or the new one, never half of either,
and the rename survives a crash. Partner IDs become file and folder names, so one that comes
from outside is checked against a narrow pattern (no ``/``, no ``..``) before a file is made
for it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Final

from adapters.envelope._errors import KeystoreError

__all__ = [
    "CHECK",
    "KEK_HEADER",
    "PRIVATE_FOLDER",
    "check_partner_id",
    "dumps",
    "fsync_dir",
    "mtime",
    "write_atomic",
]

#: What ``keystore.json``'s passphrase check encrypts (under the key-encryption key).
CHECK: Final = b"kcbus keystore passphrase check"
_PARTNER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The private-key folders: ``private`` (the first), ``private-N`` after passphrase changes.
PRIVATE_FOLDER: Final = re.compile(r"private(?:-([0-9]{1,9}))?")
#: The JWE header of every private key file and of the passphrase check.
KEK_HEADER: Final = {"alg": "A256KW", "enc": "A256GCM", "kid": "kcbus-keystore"}


def check_partner_id(partner: str) -> str:
    if not _PARTNER_ID.fullmatch(partner):
        raise KeystoreError(
            f"bad partner ID {partner[:64]!r}: use letters, digits, '.', '_', '-' (max 64)"
        )
    return partner


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (POSIX leaves that to the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def dumps(value: object) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
