"""The keystore passphrase: where it comes from (argument, environment, a secrets file, a
prompt), and changing it without ever leaving a keystore that opens with neither passphrase."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.envelope import (
    Keystore,
    KeystoreError,
    WrongPassphrase,
    open_envelope,
    seal,
)

from .conftest import NOW, PASSPHRASE, World

NEW = "a new passphrase, longer"
MESSAGE = b"<nachricht>Antrag</nachricht>"
REPO = Path(__file__).resolve().parents[3]


def _opens_with(root: Path, passphrase: str) -> bool:
    """Whether every private key of the keystore opens with ``passphrase`` (and so an envelope
    seals and opens: signing and decryption keys both work)."""
    store = Keystore(root, passphrase)
    try:
        store.unlock()
    except WrongPassphrase:
        return False
    for info in store.keys("gp"):
        if info.private and info.use == "sig":
            store.signer("gp", NOW)
        elif info.private:
            assert store.decrypter(info.kid) is not None
    return True


def _private_files(root: Path) -> list[Path]:
    return sorted(root.glob("private*/*/*.jwe"))


def test_change_re_encrypts_every_private_key(own_world: World) -> None:
    root = own_world.root / "gp"
    before = {p.name: p.read_bytes() for p in _private_files(root)}
    gp = own_world.keystore("gp")
    assert gp.change_passphrase(NEW, now=NOW) == 2

    after = {p.name: p.read_bytes() for p in _private_files(root)}
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in after)
    assert not (root / "private").exists()  # the old folder is gone
    for file in _private_files(root):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(file.parent.parent.stat().st_mode) == 0o700
    assert not _opens_with(root, PASSPHRASE)
    assert _opens_with(root, NEW)

    # the same object goes on working, and so does a fresh one with the new passphrase
    hospital = own_world.keystore("hospital")
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW)
    assert open_envelope(sealed.data(), keystore=gp, now=NOW, replay_guard=None).message == MESSAGE
    fresh = Keystore(root, NEW)
    reply = seal(MESSAGE, sender="gp", recipient="hospital", keystore=fresh, now=NOW)
    assert open_envelope(reply.data(), keystore=hospital, now=NOW, replay_guard=None)

    log = [json.loads(line) for line in (root / "keystore.log").read_text().splitlines()]
    assert log[-1]["event"] == "passphrase-changed" and log[-1]["keys"] == 2
    assert PASSPHRASE not in (root / "keystore.log").read_text()


def test_change_twice_and_new_keys_land_in_the_current_folder(own_world: World) -> None:
    root = own_world.root / "gp"
    gp = own_world.keystore("gp")
    gp.change_passphrase(NEW, now=NOW)
    again = Keystore(root, NEW)
    again.change_passphrase("third", now=NOW)
    third = Keystore(root, "third")
    third.rotate("gp", now=NOW)
    assert len(_private_files(root)) == 4
    assert {p.parent.parent.name for p in _private_files(root)} == {"private-2"}
    assert _opens_with(root, "third")


def test_refusals_change_nothing(own_world: World, world: World) -> None:
    root = own_world.root / "gp"
    before = {p: p.read_bytes() for p in _private_files(root)}
    with pytest.raises(WrongPassphrase):
        Keystore(root, "wrong").change_passphrase(NEW, now=NOW)
    with pytest.raises(KeystoreError, match="empty"):
        own_world.keystore("gp").change_passphrase("", now=NOW)
    assert {p: p.read_bytes() for p in _private_files(root)} == before
    with pytest.raises(KeystoreError, match="no private keys"):
        Keystore(own_world.root / "nobody", PASSPHRASE).change_passphrase(NEW, now=NOW)


def test_a_failure_mid_way_leaves_the_old_passphrase(
    own_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.envelope import _keystore_passphrase_change as change

    root = own_world.root / "gp"
    real = change.write_atomic
    calls: list[Path] = []

    def full_disk(path: Path, data: bytes, mode: int = 0o644) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(change, "write_atomic", full_disk)
    with pytest.raises(OSError):
        own_world.keystore("gp").change_passphrase(NEW, now=NOW)
    monkeypatch.undo()
    assert [p.name for p in root.iterdir() if p.name.startswith("private")] == ["private"]
    assert _opens_with(root, PASSPHRASE) and not _opens_with(root, NEW)


# The crash test kills a real process (os._exit: no finally, no cleanup) at each step of the
# change: before/after each re-encrypted file, and after the switch before the old folder goes.
_CRASHER = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from adapters.envelope import Keystore
    from adapters.envelope import _keystore_passphrase_change as change

    root, old, new, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    real, calls = change.write_atomic, [0]

    def dying(*args, **kwargs):
        if calls[0] == crash_at:
            os._exit(17)
        calls[0] += 1
        real(*args, **kwargs)

    change.write_atomic = dying
    change.shutil.rmtree = lambda *args, **kwargs: os._exit(17)
    Keystore(root, old).change_passphrase(new, now=datetime.fromisoformat(sys.argv[5]))
    os._exit(0)
    """
)


@pytest.mark.parametrize(
    ("crash_at", "survivor"),
    [(0, PASSPHRASE), (1, PASSPHRASE), (2, PASSPHRASE), (3, NEW)],
    ids=["before-first-file", "between-files", "before-switch", "after-switch"],
)
def test_a_crash_leaves_one_passphrase_that_opens_everything(
    own_world: World, crash_at: int, survivor: str
) -> None:
    """gp holds two private keys: writes 0 and 1 are the re-encrypted files, write 2 is the
    switch of keystore.json; crash_at 3 dies deleting the old folder after the switch."""
    root = own_world.root / "gp"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASHER,
            str(root),
            PASSPHRASE,
            NEW,
            str(crash_at),
            NOW.isoformat(),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 17, done.stderr
    other = NEW if survivor == PASSPHRASE else PASSPHRASE
    assert _opens_with(root, survivor)
    assert not _opens_with(root, other)

    # Running the change again (with the passphrase that works) finishes the job and sweeps
    # what the crash left behind.
    Keystore(root, survivor).change_passphrase("final", now=NOW)
    assert _opens_with(root, "final")
    folders = [p.name for p in root.iterdir() if p.name.startswith("private")]
    assert len(folders) == 1 and len(_private_files(root)) == 2


def test_another_process_notices_the_change(own_world: World) -> None:
    """A long-running worker unlocked before the operator changed the passphrase: with a
    secrets-backend callable it asks again and goes on; it never writes under the old key."""
    root = own_world.root / "gp"
    current = [PASSPHRASE]
    asked: list[str] = []

    def backend() -> str:
        asked.append(current[0])
        return current[0]

    worker = Keystore(root, backend)
    worker.unlock()
    Keystore(root, PASSPHRASE).change_passphrase(NEW, now=NOW)
    current[0] = NEW
    worker.signer("gp", NOW)  # not cached yet: read from the new folder, under the new key
    assert asked == [PASSPHRASE, NEW]

    stale = Keystore(root, NEW)
    stale.unlock()
    Keystore(root, NEW).change_passphrase("third", now=NOW)
    current[0] = "third"
    worker.rotate("gp", now=NOW)  # the worker's key is stale: it must ask before writing
    assert asked[-1] == "third"
    assert _opens_with(root, "third")
    with pytest.raises(WrongPassphrase):
        stale.signer("gp", NOW)


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("private"))


def test_leftovers_of_an_interrupted_change_go_on_the_next_reload(
    own_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash right after the switch leaves the old folder, encrypted under the old (maybe
    leaked) passphrase. A worker that only reads removes it when it loads the keystore —
    only names a passphrase change writes, never through a symlink."""
    import shutil

    root = own_world.root / "gp"
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # the keystore's too
    Keystore(root, PASSPHRASE).change_passphrase(NEW, now=NOW)  # "crashes" before the delete
    monkeypatch.undo()
    assert _folders(root) == ["private", "private-1"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other.jwe").write_text("not ours")
    (root / "private-9").symlink_to(outside, target_is_directory=True)
    (root / "private-old").mkdir()

    worker = Keystore(root, NEW)
    assert _folders(root) == ["private-1", "private-9", "private-old"]
    assert (outside / "other.jwe").read_text() == "not ours"
    assert worker.signer("gp", NOW) and _opens_with(root, NEW)


def test_a_change_in_progress_is_left_alone_and_the_next_write_sweeps(own_world: World) -> None:
    import fcntl
    import shutil

    root = own_world.root / "gp"
    shutil.copytree(root / "private", root / "private-4")  # as if a change were writing it
    with open(root / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # ... and held the lock
        store = Keystore(root, PASSPHRASE)
        assert _folders(root) == ["private", "private-4"]
        fcntl.flock(lock, fcntl.LOCK_UN)
    # the change "crashed" before its switch: the next write (any, here a rotation) sweeps
    store.rotate("gp", now=NOW)
    assert _folders(root) == ["private"]
    assert _opens_with(root, PASSPHRASE)


# --- where the passphrase comes from ---------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("KCBUS_KEYSTORE_PASSPHRASE", raising=False)
    monkeypatch.delenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", raising=False)
    return monkeypatch


def _secret(tmp_path: Path, text: str, mode: int) -> Path:
    file = tmp_path / "passphrase"
    file.write_text(text)
    os.chmod(file, mode)
    return file


def test_passphrase_file(world: World, tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    # a secret file as written by `echo`, systemd or Kubernetes (trailing newline or none)
    for text in (PASSPHRASE + "\n", PASSPHRASE, PASSPHRASE + "\r\n"):
        no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(_secret(tmp_path, text, 0o400)))
        Keystore(world.root / "gp").unlock()
    # Kubernetes mounts secrets as symlinks into ..data/: the target's mode is what counts
    link = tmp_path / "link"
    link.symlink_to(_secret(tmp_path, PASSPHRASE, 0o600))
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(link))
    Keystore(world.root / "gp").unlock()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o444])
def test_a_readable_passphrase_file_is_refused(
    world: World, tmp_path: Path, no_env: pytest.MonkeyPatch, mode: int
) -> None:
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(_secret(tmp_path, PASSPHRASE, mode)))
    with pytest.raises(KeystoreError, match=f"readable by group or others \\(mode {mode:04o}\\)"):
        Keystore(world.root / "gp").unlock()


def test_passphrase_file_errors(world: World, tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    store = world.root / "gp"
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(tmp_path / "missing"))
    with pytest.raises(KeystoreError, match="cannot read passphrase file"):
        Keystore(store).unlock()
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(tmp_path))
    with pytest.raises(KeystoreError, match="not a regular file"):
        Keystore(store).unlock()
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(_secret(tmp_path, "wrong\n", 0o600)))
    with pytest.raises(WrongPassphrase):
        Keystore(store).unlock()
    no_env.setenv("KCBUS_KEYSTORE_PASSPHRASE", PASSPHRASE)
    with pytest.raises(KeystoreError, match="both"):
        Keystore(store).unlock()
    # an explicit passphrase (or secrets-backend callable) comes first
    Keystore(store, PASSPHRASE).unlock()


def test_a_fifo_is_refused_without_waiting_for_a_writer(world: World, tmp_path: Path) -> None:
    """A FIFO as the passphrase file must not hang the worker (opening one for reading waits
    for a writer). A child process, so a regression fails on the timeout instead of hanging."""
    fifo = tmp_path / "passphrase"
    os.mkfifo(fifo, 0o600)
    env = {k: v for k, v in os.environ.items() if k != "KCBUS_KEYSTORE_PASSPHRASE"}
    env["KCBUS_KEYSTORE_PASSPHRASE_FILE"] = str(fifo)
    code = f"from adapters.envelope import Keystore; Keystore({str(world.root / 'gp')!r}).unlock()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "is not a regular file" in done.stderr


def test_no_source_names_both_variables(world: World, no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(sys, "stdin", None)
    with pytest.raises(KeystoreError, match="KCBUS_KEYSTORE_PASSPHRASE_FILE"):
        Keystore(world.root / "gp").unlock()
