"""Changing a keystore's passphrase, and sweeping what an interrupted change left behind.

The change re-encrypts every private key into a new folder ``private-N``, switches
``keystore.json`` to it in one atomic rename, then deletes the old folder (the keystore module
docstring says why a crash never leaves a mix). Folders ``keystore.json`` does not point to are
leftovers of an interrupted change: :func:`sweep` deletes them under the lock,
:func:`sweep_if_unlocked` on a reload. Entry point: :meth:`Keystore.change_passphrase`.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from joserfc import jwe as joserfc_jwe

from adapters.envelope._errors import KeystoreError
from adapters.envelope._keystore_files import (
    CHECK,
    KEK_HEADER,
    PRIVATE_FOLDER,
    dumps,
    fsync_dir,
    write_atomic,
)

if TYPE_CHECKING:
    from adapters.envelope._keystore import Keystore

__all__ = ["change_passphrase", "sweep", "sweep_if_unlocked"]


def change_passphrase(store: Keystore, new: str, *, now: datetime) -> int:
    """:meth:`Keystore.change_passphrase` (documented there), on ``store``."""
    if not new:
        raise KeystoreError("empty keystore passphrase")
    with store._locked():
        meta = store._load_meta()
        if meta is None:
            raise KeystoreError(f"keystore {store.path} holds no private keys")
        old_kek, old_dir = store._unlock(), store._private_dir  # leftovers: swept by _locked
        params = store._new_kdf()
        new_kek = store._derive(new, params)
        check = joserfc_jwe.encrypt_compact(KEK_HEADER, CHECK, new_kek)
        name = next_private_name(store)
        staging = store.path / name
        count = 0
        staging.mkdir(mode=0o700)
        try:
            for partner_dir in sorted(old_dir.iterdir()) if old_dir.is_dir() else ():
                if not partner_dir.is_dir():
                    continue
                target = staging / partner_dir.name
                target.mkdir(mode=0o700)
                for file in sorted(partner_dir.glob("*.jwe")):
                    kid = file.name.removesuffix(".jwe")
                    plaintext = store._decrypt_private(file.read_bytes(), old_kek, kid)
                    token = joserfc_jwe.encrypt_compact(KEK_HEADER, plaintext, new_kek)
                    write_atomic(target / file.name, token.encode(), mode=0o600)
                    count += 1
                fsync_dir(target)
            fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # The one switch: before this rename the old passphrase opens everything, after it
        # the new one does.
        write_atomic(
            store._meta_file, dumps({**meta, "kdf": params, "check": check, "private": name})
        )
        store._kek, store._kek_check = new_kek, check
        store._load_meta()
        store._audit(now, "passphrase-changed", keys=count)
        shutil.rmtree(old_dir, ignore_errors=True)
    return count


def next_private_name(store: Keystore) -> str:
    numbers = [0]
    for child in store.path.iterdir():
        match = PRIVATE_FOLDER.fullmatch(child.name)
        if match and match.group(1):
            numbers.append(int(match.group(1)))
    return f"private-{max(numbers) + 1}"


def leftover_folders(store: Keystore, current: str) -> list[Path]:
    """Private folders keystore.json does not point to: what an interrupted passphrase
    change left (a half-written new folder, or the old one). Only names that
    change_passphrase writes, only real folders (a symlink is never followed)."""
    try:
        children = list(store.path.iterdir())
    except FileNotFoundError:
        return []
    return [
        child
        for child in children
        if child.name != current
        and PRIVATE_FOLDER.fullmatch(child.name)
        and not child.is_symlink()
        and child.is_dir()
    ]


def sweep(store: Keystore) -> None:
    """Delete the leftovers; the caller holds the lock (so no change is half-way) and has
    just read keystore.json under it."""
    if store._meta_check is None:
        return  # no keystore.json: nothing says which folder is current
    leftovers = leftover_folders(store, store._private_name)
    for child in leftovers:
        shutil.rmtree(child)
    if leftovers:
        fsync_dir(store.path)


def sweep_if_unlocked(store: Keystore) -> None:
    """Sweep leftovers on a reload too, so a worker that only reads does not keep the old
    passphrase's keys on disk until the next write. Only if the lock is free (a change in
    progress is not a leftover), and best effort: a read-only keystore stays as it is."""
    meta = store._read_meta()
    if meta is None or not leftover_folders(store, str(meta.get("private", "private"))):
        return
    with contextlib.suppress(OSError), open(store.path / ".lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a writer is at work; it sweeps, or the next reload does
        try:
            store._load_meta()  # again, under the lock
            sweep(store)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
