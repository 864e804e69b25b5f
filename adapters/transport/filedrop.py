"""``file://`` — a drop folder on a local (or mounted) file system.

Features: partners drop envelopes into the folder and kcbus picks up only complete files
(atomic rename from a temporary name, or a completion marker), claims each by an atomic rename
into a per-worker folder (two workers never take the same file), moves it to ``.done`` after
the acknowledgement (i.e. after the ledger commit) or to ``.failed`` on reject, and gives back
claims of crashed workers. Outbound envelopes are written to ``.tmp``, flushed to disk and then
published without replacing (idempotent by envelope id). The full algorithm and layout are in
:mod:`adapters.transport._dropbox`.

URL: ``file:///absolute/path/to/folder`` (``file://localhost/...`` too).

Options (defaults):

``complete`` (``rename``)
    ``rename``: every visible file is complete (writers use a temporary name and rename);
    ``marker``: a file is complete once ``<name><marker_suffix>`` exists.
``marker_suffix`` (``.ok``), ``settle_seconds`` (0: off; skip files younger than this)
``suffix`` (``.env``)
    outbound files are ``<envelope_id><suffix>``; inbound names with it yield the envelope id.
``worker`` (``<host>~<pid>~<nonce>``, unique per connection)
    claim folder name; give stable names to workers on different hosts sharing a mount.
``claim_timeout`` (900 s)
    a claim older than this is given back (the worker is presumed dead).
``on_ack`` (``move``: keep in ``.done``; ``delete``)
``max_bytes`` (2 GiB)
    largest envelope handed out to be read; a larger file (by its listed size, or as read: it
    grew) refuses to be read and is parked in ``.failed`` with reason ``envelope-too-large``
    (:class:`~adapters.transport.DeliveryTooLarge`).
``fsync`` (true)
    flush files and directories to disk before a write counts as done (POSIX ``fsync(2)``).
``create`` (true)
    create the folder and its sub-folders if missing; false: a missing folder is an error.
``poll_interval`` (0.2 s)
    how often ``receive(timeout=...)`` looks again while the folder is empty.

Errors: :class:`TransportConfigError` for a missing folder (``create=false``) or permission
denied (an operator must act); any other ``OSError`` (disk full, stale NFS handle) becomes the
recoverable :class:`TransportUnavailable`.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, ClassVar, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from adapters.transport._base import Delivery, Outbound, TransportBase
from adapters.transport._dropbox import DropBox, DropSettings, Entry
from adapters.transport._errors import (
    TransportConfigError,
    TransportError,
    TransportUnavailable,
)
from adapters.transport._options import Options, merge_query

__all__ = ["FileDropTransport", "LocalFileSystem", "pid_alive"]

P = ParamSpec("P")
R = TypeVar("R")


class LocalFileSystem:
    """:class:`~adapters.transport._dropbox.FileSystem` on the local disk."""

    resumable = False

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync

    def list(self, path: str) -> list[Entry]:
        entries = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        # never follow links: a partner must not point us at other files
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append(
                        Entry(
                            entry.name,
                            st.st_size,
                            st.st_mtime,
                            entry.is_file(follow_symlinks=False),
                        )
                    )
        except FileNotFoundError:
            return []
        return entries

    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def size(self, path: str) -> int | None:
        try:
            return os.stat(path, follow_symlinks=False).st_size
        except FileNotFoundError:
            return None

    def rename(self, src: str, dst: str) -> bool:
        # no directory fsync: claims and moves lost in a crash only bring a file back to the
        # inbox (delivered again, recognised by the ledger); nothing can be lost that way
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return False
        return True

    def publish(self, src: str, dst: str, *, sync: bool = True) -> bool:
        # link(2) fails with EEXIST instead of replacing: an atomic "create if absent".
        # Only a new outbound name must be durable (sync); moves inside the box need not be:
        # one lost in a crash brings a file back to the inbox, it cannot lose one.
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return False
        os.unlink(src)
        if sync:
            self._sync_dir(dst)
        return True

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def rmdir(self, path: str) -> bool:
        try:
            os.rmdir(path)
        except OSError:
            return False
        return True

    def touch(self, path: str) -> None:
        os.utime(path, follow_symlinks=False)

    def now(self) -> float:
        return time.time()

    def open_read(self, path: str) -> BinaryIO:
        # A partner who can write the drop folder could swap a listed file for a symlink
        # between listing and claiming: never follow one, and read only regular files, or the
        # bus would carry any local file (keys!) into its ledger.
        # O_NONBLOCK: opening a FIFO planted there must not hang the worker before the check
        # (it changes nothing for reads of a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def open_write(self, path: str, *, append: bool) -> BinaryIO:
        return open(path, "ab" if append else "wb")

    def flush_to_disk(self, fileobj: BinaryIO, path: str) -> None:
        fileobj.flush()
        if self.fsync:
            os.fsync(fileobj.fileno())

    def write_text(self, path: str, text: str) -> None:
        Path(path).write_text(text)

    def _sync_dir(self, path: str) -> None:
        if not self.fsync:
            return
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Translate OSError at the edge: permissions are ours to fix, the rest may pass."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except TransportError:
            raise
        except PermissionError as exc:
            raise TransportConfigError(
                f"permission denied ({exc.errno})", transport="file"
            ) from exc
        except OSError as exc:
            raise TransportUnavailable(f"file system error {exc.errno}", transport="file") from exc

    return wrapper


class FileDropTransport(TransportBase):
    """A drop folder; see the module docstring for URL and options."""

    scheme: ClassVar[str] = "file"

    def __init__(
        self,
        directory: Path,
        settings: DropSettings | None = None,
        *,
        fsync: bool = True,
        create: bool = True,
        poll_interval: float = 0.2,
        peer: str | None = None,
        framed: bool = False,
    ) -> None:
        if not directory.is_absolute():
            raise TransportConfigError(
                "the drop folder must be an absolute path", transport=self.scheme
            )
        if not create and not directory.is_dir():
            raise TransportConfigError(
                "drop folder does not exist", transport=self.scheme, endpoint=str(directory)
            )
        self.directory = directory
        self.poll_interval = poll_interval
        self.box = DropBox(
            LocalFileSystem(fsync=fsync),
            str(directory),
            settings or DropSettings(),
            transport=self.scheme,
            peer=peer,
            framed=framed,
            pid_alive=pid_alive,
        )
        self._closed = False
        _translated(self.box.prepare)()

    @classmethod
    def from_url(cls, url: str, **options: object) -> FileDropTransport:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise TransportConfigError(
                "file URLs name a local folder: file:///path", transport=cls.scheme
            )
        opts = Options(cls.scheme, merge_query(url, options))
        settings = DropSettings.take(opts)
        transport = cls(
            Path(unquote(parts.path)),
            settings,
            fsync=opts.boolean("fsync", True),
            create=opts.boolean("create", True),
            poll_interval=opts.number("poll_interval", 0.2, minimum=0.01),
        )
        opts.done()
        return transport

    @_translated
    def send(self, item: Outbound) -> None:
        self.box.send(item)

    @_translated
    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        return self.box.receive(max_items, timeout, poll_interval=self.poll_interval)

    @_translated
    def acknowledge(self, delivery: Delivery) -> None:
        self.box.acknowledge(delivery)

    @_translated
    def release(self, delivery: Delivery) -> None:
        self.box.release(delivery)

    @_translated
    def reject(self, delivery: Delivery, reason_code: str) -> None:
        self.box.reject(delivery, reason_code)

    @_translated
    def recover(self) -> int:
        """Give back claims of crashed workers now (``receive`` also does it every minute)."""
        return self.box.recover()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.box.release_all()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (claims of dead workers come back)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
