"""Drop-folder semantics shared by ``file://`` and ``sftp://`` (one algorithm, two file systems).

Layout of one drop folder (``<dir>``)::

    <dir>/<name>                       complete envelopes, ready to be claimed
    <dir>/.tmp/                        writers' temporary files (never read as envelopes)
    <dir>/.claimed/<worker>/<name>     claimed by one worker, not yet acknowledged
    <dir>/.done/<name>                 acknowledged (``on_ack=move``)
    <dir>/.failed/<name>(.reason)      rejected, with the reason code beside it

Invariants:

* **Only complete files.** A writer publishes by an atomic rename (POSIX ``rename(2)``; SFTP
  ``SSH_FXP_RENAME``) from a temporary name: dot-files and names ending in ``.part``, ``.tmp``,
  ``.filepart``, ``.partial`` or ``~`` are never taken. With ``complete=marker`` a file counts
  only once ``<name><marker_suffix>`` exists beside it; ``settle_seconds`` additionally skips
  files modified less than that long ago (for partners that write in place).
* **One worker per file.** A claim is a rename into ``.claimed/<worker>/``; rename is atomic on
  one file system, so of two racing workers exactly one succeeds, the other sees the source gone.
* **Size limit.** A file above ``max_bytes`` (by the size listed, or read: it grew) is handed
  out ``too_large`` and refuses to be read; the caller rejects it into ``.failed`` with the
  reason ``envelope-too-large``.
* **Nothing lost.** Acknowledge moves to ``.done`` (or deletes), release moves back, reject
  moves to ``.failed``. Claims of a crashed worker come back: at once when the worker id names
  a dead process on this host, else when the claim is older than ``claim_timeout`` (claim time
  is the file's mtime, set at claim; compared with the file system's own clock).
* **Atomic, idempotent writes.** ``send`` writes ``.tmp/<id>.part``, flushes it to disk, then
  publishes ``<id><suffix>`` without replacing: an envelope id already pending is not written
  twice. Where the file system supports it (SFTP), an interrupted upload resumes from the size
  already written and is then verified by SHA-256 before it is published.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import posixpath
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from adapters.transport._base import (
    CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    Delivery,
    Outbound,
    copy_stream,
)
from adapters.transport._errors import (
    TransportConfigError,
    TransportUnavailable,
    UnknownDelivery,
)
from adapters.transport._options import Options

__all__ = ["DropBox", "DropSettings", "Entry", "FileSystem", "SpoolHeader", "is_safe_name"]

_PARTIAL_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", "~")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")
_SPOOL_MAGIC = b"KCBUS-SPOOL/1 "
_SPOOL_HEADER_MAX = 64 * 1024


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: float
    is_file: bool


class FileSystem(Protocol):
    """The file operations the drop algorithm needs (local disk or an SFTP session)."""

    #: ``True`` where an interrupted upload can continue (remote file systems).
    resumable: bool

    def list(self, path: str) -> list[Entry]: ...  # [] if the directory is missing
    def mkdirs(self, path: str) -> None: ...
    def size(self, path: str) -> int | None: ...  # None if missing
    def rename(self, src: str, dst: str) -> bool: ...  # False if src vanished
    def publish(self, src: str, dst: str, *, sync: bool = True) -> bool: ...
    # ^ no-replace; False if dst exists; sync: make the new name durable (outbound only)
    def remove(self, path: str) -> None: ...  # missing is fine
    def rmdir(self, path: str) -> bool: ...  # False if not empty/missing
    def touch(self, path: str) -> None: ...  # mtime := now
    def now(self) -> float: ...  # the file system's clock
    def open_read(self, path: str) -> BinaryIO: ...
    def open_write(self, path: str, *, append: bool) -> BinaryIO: ...
    def flush_to_disk(self, fileobj: BinaryIO, path: str) -> None: ...
    def write_text(self, path: str, text: str) -> None: ...


@dataclass(frozen=True)
class DropSettings:
    """Options shared by file drop and SFTP (see their module docstrings)."""

    complete: str = "rename"
    marker_suffix: str = ".ok"
    settle_seconds: float = 0.0
    suffix: str = ".env"
    worker: str = ""
    claim_timeout: float = 900.0
    on_ack: str = "move"
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def take(cls, opts: Options) -> DropSettings:
        return cls(
            complete=opts.choice("complete", "rename", ("rename", "marker")),
            marker_suffix=opts.text("marker_suffix", ".ok"),
            settle_seconds=opts.number("settle_seconds", 0.0, minimum=0.0),
            suffix=opts.text("suffix", ".env"),
            worker=opts.text("worker", ""),
            claim_timeout=opts.number("claim_timeout", 900.0, minimum=1.0),
            on_ack=opts.choice("on_ack", "move", ("move", "delete")),
            max_bytes=opts.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1),
        )


@dataclass(frozen=True)
class SpoolHeader:
    """Facts a spooling front end (the HTTPS inbox) stores in front of an envelope."""

    peer: str | None
    envelope_id: str | None
    receipt_id: str

    def encode(self) -> bytes:
        body = json.dumps(
            {"peer": self.peer, "envelope_id": self.envelope_id, "receipt_id": self.receipt_id},
            separators=(",", ":"),
        )
        return _SPOOL_MAGIC + body.encode() + b"\n"

    @classmethod
    def read_from(cls, stream: BinaryIO) -> tuple[SpoolHeader, int] | None:
        line = stream.readline(_SPOOL_HEADER_MAX)
        if not line.startswith(_SPOOL_MAGIC) or not line.endswith(b"\n"):
            return None
        try:
            data = json.loads(line[len(_SPOOL_MAGIC) :])
            return cls(
                peer=data["peer"], envelope_id=data["envelope_id"], receipt_id=data["receipt_id"]
            ), len(line)
        except (ValueError, KeyError, TypeError):
            return None


def default_worker() -> str:
    """``<host>~<pid>~<nonce>``: unique per transport instance; names its process so a worker
    on the same host can give back the claims of a dead one at once."""
    return f"{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}"


def is_safe_name(name: str) -> bool:
    """A plain file name of letters, digits and ``._@+=-`` (no path, no dot-file)."""
    return _SAFE_ID.match(name) is not None


def safe_name(envelope_id: str, *, transport: str) -> str:
    if not _SAFE_ID.match(envelope_id):
        raise TransportConfigError(
            "envelope id is not usable as a file name (letters, digits, ._@+=- only)",
            transport=transport,
            option="envelope_id",
        )
    return envelope_id


@dataclass
class _Claim:
    name: str
    path: str
    header_length: int


class DropBox:
    """The drop algorithm over a :class:`FileSystem`; transports wrap it."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        settings: DropSettings,
        *,
        transport: str,
        peer: str | None = None,
        framed: bool = False,
        pid_alive: Callable[[int], bool] | None = None,
        recover_every: float = 60.0,
    ) -> None:
        self.fs = fs
        self.dir = directory.rstrip("/") or "/"
        self.settings = settings
        self.transport = transport
        self.peer = peer
        self.framed = framed
        self.worker = settings.worker or default_worker()
        if "/" in self.worker or self.worker.startswith("."):
            raise TransportConfigError(
                "worker id must not contain '/' or start with '.'",
                transport=transport,
                option="worker",
            )
        self._pid_alive = pid_alive
        self._recover_every = recover_every
        self._last_recovery = float("-inf")
        self._claims: dict[str, _Claim] = {}
        self._seq = itertools.count(1)
        self.tmp = self._join(".tmp")
        self.claimed = self._join(".claimed", self.worker)
        self.done = self._join(".done")
        self.failed = self._join(".failed")

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.dir, *parts)

    def prepare(self) -> None:
        for path in (self.dir, self.tmp, self.claimed, self.done, self.failed):
            self.fs.mkdirs(path)

    # -- writing ---------------------------------------------------------------------------

    def send(self, item: Outbound) -> None:
        name = safe_name(item.envelope_id, transport=self.transport) + self.settings.suffix
        final = self._join(name)
        if self.fs.size(final) is not None:
            return  # idempotent: this envelope id is already pending here
        for _attempt in range(2):
            if self.fs.resumable:
                part = posixpath.join(self.tmp, f"{name}.part")
                resumed = self._upload_resumable(item, part)
            else:
                part = posixpath.join(self.tmp, f"{name}.{os.getpid()}.{next(self._seq)}.part")
                self._upload(item, part, offset=0)
                resumed = False
            if self.fs.size(part) == item.size and (not resumed or self._same_digest(item, part)):
                break
            self.fs.remove(part)  # the source changed or the resumed part differs: start over
        else:
            raise TransportUnavailable(
                "upload did not verify twice (size/SHA-256)", transport=self.transport
            )
        if not self.fs.publish(part, final):
            self.fs.remove(part)  # someone published the same envelope id first

    def _upload_resumable(self, item: Outbound, part: str) -> bool:
        have = self.fs.size(part)
        if have is None or have > item.size:
            if have is not None:
                self.fs.remove(part)
            self._upload(item, part, offset=0)
            return False
        if have < item.size:
            self._upload(item, part, offset=have)
        return True

    def _upload(self, item: Outbound, part: str, *, offset: int) -> None:
        with item.stream() as src:
            if offset:
                _skip(src, offset)
            with self.fs.open_write(part, append=offset > 0) as dst:
                copy_stream(src, dst)
                self.fs.flush_to_disk(dst, part)

    def _same_digest(self, item: Outbound, part: str) -> bool:
        local, remote = hashlib.sha256(), hashlib.sha256()
        with item.stream() as src:
            while chunk := src.read(CHUNK_SIZE):
                local.update(chunk)
        with self.fs.open_read(part) as dst:
            while chunk := dst.read(CHUNK_SIZE):
                remote.update(chunk)
        return local.digest() == remote.digest()

    # -- claiming --------------------------------------------------------------------------

    def _complete_names(self) -> list[Entry]:
        entries = self.fs.list(self.dir)
        names = {e.name for e in entries}
        now = self.fs.now() if self.settings.settle_seconds else 0.0
        ready = []
        for entry in entries:
            if (
                not entry.is_file
                or entry.name.startswith(".")
                or entry.name.endswith(_PARTIAL_SUFFIXES)
            ):
                continue
            marker = self.settings.marker_suffix
            if self.settings.complete == "marker" and (
                entry.name.endswith(marker) or entry.name + marker not in names
            ):
                continue
            if self.settings.settle_seconds and now - entry.mtime < self.settings.settle_seconds:
                continue
            ready.append(entry)
        ready.sort(key=lambda e: (e.mtime, e.name))  # oldest first
        return ready

    def receive(
        self, max_items: int, timeout: float = 0.0, *, poll_interval: float = 0.2
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        if time.monotonic() - self._last_recovery >= self._recover_every:
            self.recover()
        while True:
            out = self._claim_some(max_items)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def _claim_some(self, max_items: int) -> list[Delivery]:
        out: list[Delivery] = []
        try:
            self._claim_into(out, max_items)
        except BaseException:
            # the caller never sees these: forget them, so that the next recovery (made due
            # at once) gives them back from our claim folder
            for delivery in out:
                self._claims.pop(delivery.delivery_id, None)
            self._last_recovery = float("-inf")
            raise
        return out

    def _claim_into(self, out: list[Delivery], max_items: int) -> None:
        for entry in self._complete_names():
            if len(out) >= max_items:
                break
            target = posixpath.join(self.claimed, entry.name)
            if not self.fs.rename(self._join(entry.name), target):
                continue  # another worker was faster
            self.fs.touch(target)  # claim time, for stale-claim recovery
            if self.settings.complete == "marker":
                self.fs.remove(self._join(entry.name + self.settings.marker_suffix))
            out.append(self._delivery(entry.name, target, entry.size))

    def _delivery(self, name: str, path: str, size: int) -> Delivery:
        header_length = 0
        peer, envelope_id = self.peer, self._envelope_id(name)
        if self.framed:
            with self.fs.open_read(path) as stream:
                parsed = SpoolHeader.read_from(stream)
            if parsed is not None:
                header, header_length = parsed
                peer, envelope_id = header.peer, header.envelope_id
        delivery_id = f"{self.worker}/{name}"
        self._claims[delivery_id] = _Claim(name, path, header_length)
        fs, skip = self.fs, header_length

        def opener() -> BinaryIO:
            stream = fs.open_read(path)
            if skip:
                stream.seek(skip)
            return stream

        return Delivery(
            delivery_id=delivery_id,
            envelope_id=envelope_id,
            size=size - header_length,
            peer=peer,
            transport=self.transport,
            opener=opener,
            max_bytes=self.settings.max_bytes,
        )

    def _envelope_id(self, name: str) -> str | None:
        suffix = self.settings.suffix
        if suffix and name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if _SAFE_ID.match(stem) else None
        return None

    def _claim_of(self, delivery: Delivery) -> _Claim:
        claim = self._claims.get(delivery.delivery_id)
        if claim is None:
            raise UnknownDelivery(transport=self.transport, delivery_id=delivery.delivery_id)
        return claim

    # The claim is forgotten only after its file has moved: a call repeated after a lost
    # connection finds the claim again and the move already done (renames check the source).

    def acknowledge(self, delivery: Delivery) -> None:
        claim = self._claim_of(delivery)
        if self.settings.on_ack == "delete":
            self.fs.remove(claim.path)
        else:
            self._move_unique(claim.path, self.done, claim.name)
        del self._claims[delivery.delivery_id]

    def release(self, delivery: Delivery) -> None:
        claim = self._claim_of(delivery)
        self._return(claim.path, claim.name)
        del self._claims[delivery.delivery_id]

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        claim = self._claim_of(delivery)
        final = self._move_unique(claim.path, self.failed, claim.name)
        self.fs.write_text(final + ".reason", reason_code + "\n")
        del self._claims[delivery.delivery_id]

    def release_all(self) -> None:
        """Give back every claim still held (``close()``); drop our empty claim folder."""
        for delivery_id in list(self._claims):
            claim = self._claims.pop(delivery_id)
            with contextlib.suppress(OSError):
                self._return(claim.path, claim.name)
        with contextlib.suppress(OSError):
            self.fs.rmdir(self.claimed)

    def _return(self, path: str, name: str) -> None:
        # publish, not rename: never overwrite a newer file of the same name from the partner
        if not self.fs.publish(path, self._join(name), sync=False):
            self._move_unique(path, self.dir, name)

    def _move_unique(self, path: str, directory: str, name: str) -> str:
        target = posixpath.join(directory, name)
        if self.fs.publish(path, target, sync=False) or self.fs.size(path) is None:
            return target  # moved now, or by an earlier attempt whose answer was lost
        target = posixpath.join(directory, f"{name}.{time.time_ns()}")
        self.fs.rename(path, target)
        return target

    def known(self, name: str) -> bool:
        """Whether ``name`` is pending, claimed by any worker, done or failed here."""
        places = [self.dir, self.done, self.failed]
        places += [
            posixpath.join(self._join(".claimed"), w.name)
            for w in self.fs.list(self._join(".claimed"))
            if not w.is_file
        ]
        return any(self.fs.size(posixpath.join(p, name)) is not None for p in places)

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> int:
        """Give back claims of crashed workers; returns how many files came back."""
        self._last_recovery = time.monotonic()
        root = self._join(".claimed")
        now = self.fs.now()
        recovered = 0
        for worker in self.fs.list(root):
            if worker.is_file or worker.name == self.worker:
                continue
            dead = self._worker_dead(worker.name)
            folder = posixpath.join(root, worker.name)
            for entry in self.fs.list(folder):
                stale = dead or now - entry.mtime >= self.settings.claim_timeout
                if (
                    entry.is_file
                    and stale
                    and self.fs.publish(
                        posixpath.join(folder, entry.name), self._join(entry.name), sync=False
                    )
                ):
                    recovered += 1
            if dead:
                self.fs.rmdir(folder)  # gone for good; stale-by-age folders may still be used
        # our own folder: files left by an earlier process with the same worker id
        mine = {c.path for c in self._claims.values()}
        for entry in self.fs.list(self.claimed):
            path = posixpath.join(self.claimed, entry.name)
            if (
                entry.is_file
                and path not in mine
                and self.fs.publish(path, self._join(entry.name), sync=False)
            ):
                recovered += 1
        return recovered

    def _worker_dead(self, worker: str) -> bool:
        parts = worker.split("~")
        if (
            len(parts) != 3
            or parts[0] != socket.gethostname()
            or not parts[1].isdigit()
            or self._pid_alive is None
        ):
            return False
        return not self._pid_alive(int(parts[1]))


def _skip(stream: BinaryIO, offset: int) -> None:
    if stream.seekable():
        stream.seek(offset)
        return
    left = offset
    while left:
        chunk = stream.read(min(CHUNK_SIZE, left))
        if not chunk:
            break
        left -= len(chunk)
