"""``sftp://`` — a drop folder on a partner's SFTP server (paramiko), same semantics as ``file://``.

Features: everything of the file drop (:mod:`adapters.transport._dropbox`: only complete files,
claims by atomic rename, ``.done``/``.failed``, recovery of stale claims, atomic idempotent
writes) on the remote side, plus:

* **Host-key checking on.** The server's key must be in ``known_hosts`` (OpenSSH format, the
  ``[host]:port`` form for other ports); an unknown or changed key refuses the connection.
* **Key login only.** The private key comes from ``key_file``; the URL's password, if any, is
  the key's passphrase (it is never sent to the server).
* **Resumable uploads.** Outbound envelopes go to ``.tmp/<id><suffix>.part`` (a name fixed by the
  envelope id). After a broken connection the next attempt appends from the size already on the
  server, verifies the whole file by SHA-256 against the source, and only then renames it into
  place (OpenSSH's ``rename`` never replaces an existing file).
* **Streaming in constant memory.** Uploads are pipelined; downloads keep a sliding window of
  ``window`` bytes of READ requests in flight (:class:`_ReadAhead`, not paramiko's
  ``readv``/``prefetch``, whose buffers can grow without bound), not the whole file.
* **Reconnect in one place.** Every SFTP call goes through ``_Session.call``: on a connection
  error it reconnects and repeats the call, up to ``retries`` times with ``retry_interval``
  growing linearly; then it raises :class:`TransportUnavailable`.

URL: ``sftp://user[:key-passphrase]@host[:port]/absolute/folder``

Options (defaults): the file-drop options ``complete``, ``marker_suffix``, ``settle_seconds``,
``suffix`` (``.env``), ``worker``, ``claim_timeout`` (900 s, against the server's clock),
``on_ack`` (``move``), ``max_bytes`` (2 GiB: a larger file, by its SFTP attributes or as read,
is refused unread and parked in ``.failed`` with reason ``envelope-too-large``),
``poll_interval`` (1 s); and

``key_file`` (required)             private key (OpenSSH/PEM; Ed25519, ECDSA or RSA)
``known_hosts`` (``~/.ssh/known_hosts``)  host keys to trust
``peer`` (none)                     partner id to report as ``Delivery.peer`` (the host key
                                    authenticates the server this folder belongs to)
``timeout`` (15 s)                  connect, banner, auth and per-request timeout
``retries`` (3), ``retry_interval`` (0.5 s)   reconnect policy
``window`` (2 MiB)                  read-ahead of a download (bytes of requests in flight)

Errors: connection refused/reset/dropped, timeouts → :class:`TransportUnavailable`
(recoverable, after the reconnect policy is spent); unknown or changed host key, login refused,
missing key file, permission denied on the server → :class:`TransportConfigError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import posixpath
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, int64

from adapters.transport._base import CHUNK_SIZE, Delivery, Outbound, TransportBase
from adapters.transport._dropbox import DropBox, DropSettings, Entry, default_worker
from adapters.transport._errors import (
    TransportConfigError,
    TransportError,
    TransportUnavailable,
)
from adapters.transport._options import Options, merge_query

__all__ = ["SftpFileSystem", "SftpTransport"]

R = TypeVar("R")

# connection-level failures: the session is gone, a new one may work
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    paramiko.SSHException,
    EOFError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
_SFTP_REQUEST = 32 * 1024  # paramiko's (and OpenSSH's safe) request size


class _UnknownHostKey(paramiko.SSHException):
    """The server's host is not in known_hosts at all (raised by :class:`_RefuseUnknownHost`)."""


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """paramiko's ``RejectPolicy``, but with an exception type of our own: an unknown host is
    told apart from other SSH failures by its type, not by the text of paramiko's message."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(f"host key of {hostname} ({key.get_name()}) is not known")


class _Session:
    """One SSH connection with its SFTP channel; reconnects in ``call`` (the one retry place)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        key_file: Path,
        passphrase: str | None,
        known_hosts: Path,
        timeout: float,
        retries: int,
        retry_interval: float,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.key_file, self.passphrase = key_file, passphrase
        self.known_hosts = known_hosts
        self.timeout = timeout
        self.retries = retries
        self.retry_interval = retry_interval
        self.endpoint = f"sftp://{user}@{host}:{port}"
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._depth = 0

    def _connect(self) -> paramiko.SFTPClient:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except OSError as exc:
            raise TransportConfigError(
                "known_hosts file cannot be read",
                transport="sftp",
                endpoint=self.endpoint,
                option="known_hosts",
            ) from exc
        client.set_missing_host_key_policy(_RefuseUnknownHost())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file),
                passphrase=self.passphrase,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
            transport = client.get_transport()
            if transport is not None:
                # small SFTP requests behind larger writes otherwise wait for the peer's delayed
                # ACK (Nagle's algorithm, RFC 896 / RFC 1122 §4.2.3.2)
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.timeout)  # type: ignore[union-attr]
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportConfigError(
                "the server's host key does not match known_hosts",
                transport="sftp",
                endpoint=self.endpoint,
                option="known_hosts",
            ) from exc
        except _UnknownHostKey as exc:
            client.close()
            raise TransportConfigError(
                "the server's host key is not in known_hosts",
                transport="sftp",
                endpoint=self.endpoint,
                option="known_hosts",
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportConfigError(
                "login refused (key not accepted)",
                transport="sftp",
                endpoint=self.endpoint,
                option="key_file",
            ) from exc
        except paramiko.SSHException:
            client.close()
            raise
        except (FileNotFoundError, PermissionError) as exc:
            client.close()
            raise TransportConfigError(
                "the private key file cannot be read",
                transport="sftp",
                endpoint=self.endpoint,
                option="key_file",
            ) from exc
        self._client, self._sftp = client, sftp
        return sftp

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._client is None or not self._transport_active():
            self.close()
            return self._connect()
        return self._sftp

    def _transport_active(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def call(self, fn: Callable[[paramiko.SFTPClient], R], what: str) -> R:
        """Run one SFTP operation, reconnecting on connection errors (the one retry place).

        Calls nest (a transport operation is many SFTP requests): only the outermost call
        retries, and it repeats the whole operation, which the drop algorithm makes safe
        (renames are checked, uploads resume).
        """
        if self._depth:
            return fn(self.sftp())
        for attempt in range(self.retries + 1):
            self._depth += 1
            try:
                return fn(self.sftp())
            except TransportError:
                raise
            except _CONNECTION_ERRORS as exc:
                self.close()
                if attempt >= self.retries:
                    raise TransportUnavailable(
                        f"{what}: connection lost ({type(exc).__name__})",
                        transport="sftp",
                        endpoint=self.endpoint,
                    ) from exc
                time.sleep(self.retry_interval * attempt)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise TransportConfigError(
                        f"{what}: permission denied on the server",
                        transport="sftp",
                        endpoint=self.endpoint,
                    ) from exc
                if exc.errno is None and not self._transport_active():
                    # paramiko's Channel raises a bare OSError("Socket is closed") when the
                    # connection died under a write: a lost connection, so resume like one.
                    self.close()
                    if attempt >= self.retries:
                        raise TransportUnavailable(
                            f"{what}: connection lost (socket closed)",
                            transport="sftp",
                            endpoint=self.endpoint,
                        ) from exc
                    time.sleep(self.retry_interval * attempt)
                    continue
                if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) or exc.errno in (
                    errno.ECONNREFUSED,
                    errno.EHOSTUNREACH,
                    errno.ENETUNREACH,
                ):
                    self.close()
                    if attempt >= self.retries:
                        raise TransportUnavailable(
                            f"{what}: server unreachable", transport="sftp", endpoint=self.endpoint
                        ) from exc
                    time.sleep(self.retry_interval * attempt)
                    continue
                raise
            finally:
                self._depth -= 1
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client, self._sftp = None, None


class _PrivateSftp(Protocol):
    """The request layer of paramiko's ``SFTPClient`` (5.1.0, pinned) that :class:`_ReadAhead`
    drives; paramiko has no public call for one asynchronous READ."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> object: ...
    def _convert_status(self, msg: paramiko.Message) -> None: ...


class _ReadAhead:
    """At most ``depth`` SSH_FXP_READ requests in flight over ``[start, end)``, taken in order.

    Why not ``SFTPFile.readv``/``prefetch``: paramiko's prefetch marks itself done whenever its
    table of outstanding requests runs empty, which happens whenever the reader drains answers
    faster than the prefetch thread sends requests (paramiko PR #2519). ``read`` then falls back
    to one synchronous round trip per 32 KiB while the answers to the requests sent afterwards
    pile up in ``_prefetch_data``, which nothing reads or clears while the handle lives: a 200 MB
    download held ~60 MiB and ran at a quarter of ``getfo``'s speed. Here the sending and the
    reading are the same thread, each answer is removed when taken, and a new request is sent
    only then: what is held is bounded by ``depth`` requests plus the SSH channel window.
    """

    def __init__(
        self, sftp: paramiko.SFTPClient, handle: bytes, start: int, end: int, depth: int
    ) -> None:
        self._sftp = cast(_PrivateSftp, sftp)
        self._handle = handle
        self._next, self._end, self._depth = start, end, depth
        self._sent: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
        self._answers: dict[int, bytes | BaseException] = {}
        self._abandoned = False
        self._send()

    def _send(self) -> None:
        while len(self._sent) < self._depth and self._next < self._end:
            length = min(_SFTP_REQUEST, self._end - self._next)
            num = self._sftp._async_request(
                self, CMD_READ, self._handle, int64(self._next), int(length)
            )
            self._sent.append((num, self._next, length))
            self._next += length

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        """paramiko's callback for an answer to one of our requests (from ``_read_response``)."""
        if self._abandoned:
            return  # answers still in flight after a seek or close: drop them
        if t == CMD_DATA:
            self._answers[num] = msg.get_binary()
            return
        try:
            self._sftp._convert_status(msg)  # raises for an error status, EOFError at the end
            self._answers[num] = paramiko.SFTPError("READ answered without data")
        except EOFError:
            self._answers[num] = b""  # the file is shorter than its size said
        except Exception as exc:  # re-raised when this chunk is taken
            self._answers[num] = exc

    def take(self) -> tuple[int, bytes, int]:
        """The next chunk in file order: ``(offset, data, length asked)``; ``data`` is empty at
        the end. Waits for its answer, then sends the next request."""
        if not self._sent:
            return self._next, b"", 0
        num, offset, length = self._sent.popleft()
        while num not in self._answers:
            self._sftp._read_response()
        answer = self._answers.pop(num)
        if isinstance(answer, BaseException):
            raise answer
        self._send()
        return offset, answer, length

    def abandon(self) -> None:
        self._abandoned = True
        self._answers.clear()


class _WindowReader(io.RawIOBase):
    """Reads a remote file front to back with up to ``window`` bytes of requests in flight."""

    def __init__(self, session: _Session, path: str, window: int, size: int | None = None) -> None:
        self._session, self._path, self._window = session, path, window
        self._file: paramiko.SFTPFile | None = None
        self._ahead: _ReadAhead | None = None
        self._size = size if size is not None else -1
        self._pos = 0  # file offset just after ``_buffer``
        # The chunk just read and how far readinto() has consumed it.
        self._buffer = memoryview(b"")
        self._taken = 0

    def _open(self) -> paramiko.SFTPFile:
        if self._file is None:

            def op(sftp: paramiko.SFTPClient) -> paramiko.SFTPFile:
                handle = sftp.open(self._path, "rb")
                if self._size < 0:
                    self._size = handle.stat().st_size or 0
                return handle

            self._file = self._session.call(op, "open")
        return self._file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos - (len(self._buffer) - self._taken)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        self._open()
        self._stop_ahead()
        self._pos, self._buffer, self._taken = offset, memoryview(b""), 0
        return offset

    def _stop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.abandon()
            self._ahead = None

    def _fill(self) -> None:
        try:
            self._next_chunk()
        except _CONNECTION_ERRORS as exc:
            # mid-stream: no retry here; the delivery stays claimed and comes again
            raise TransportUnavailable(
                f"download: connection lost ({type(exc).__name__})",
                transport="sftp",
                endpoint=self._session.endpoint,
            ) from exc

    def _next_chunk(self) -> None:
        if self._ahead is None:
            handle = self._open()
            self._ahead = _ReadAhead(
                handle.sftp,
                cast(bytes, handle.handle),
                self._pos,
                self._size,
                max(1, self._window // _SFTP_REQUEST),
            )
        offset, data, asked = self._ahead.take()
        if len(data) < asked:
            # a server may answer with fewer bytes than asked (draft-ietf-secsh-filexfer-02
            # §6.4); the requests behind it are for later offsets: ask again from here
            self._stop_ahead()
        self._pos = offset + len(data)
        self._buffer, self._taken = memoryview(data), 0

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._taken >= len(self._buffer):
            self._fill()
        n = min(len(target), len(self._buffer) - self._taken)
        target[:n] = self._buffer[self._taken : self._taken + n]
        self._taken += n
        return n

    def close(self) -> None:
        self._stop_ahead()
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()  # reads the answers still in flight (dropped) first
            self._file = None
        super().close()


class SftpFileSystem:
    """:class:`~adapters.transport._dropbox.FileSystem` over one SFTP session."""

    resumable = True

    def __init__(self, session: _Session, *, window: int, worker: str) -> None:
        self.session = session
        self.window = window
        self._clock = f".clock-{worker}"
        self.clock_dir = "/tmp"  # the transport points it at the drop folder's .tmp

    def list(self, path: str) -> list[Entry]:
        def op(sftp: paramiko.SFTPClient) -> list[Entry]:
            try:
                attrs = sftp.listdir_attr(path)
            except FileNotFoundError:
                return []
            return [
                Entry(
                    a.filename, a.st_size or 0, float(a.st_mtime or 0), stat.S_ISREG(a.st_mode or 0)
                )
                for a in attrs
            ]

        return self.session.call(op, "list")

    def mkdirs(self, path: str) -> None:
        def op(sftp: paramiko.SFTPClient) -> None:
            parts = [p for p in path.split("/") if p]
            current = "/" if path.startswith("/") else ""
            for part in parts:
                current = posixpath.join(current, part)
                try:
                    sftp.stat(current)
                except FileNotFoundError:
                    with contextlib.suppress(OSError):
                        sftp.mkdir(current)  # a racing worker may have made it

        self.session.call(op, "mkdir")

    def size(self, path: str) -> int | None:
        def op(sftp: paramiko.SFTPClient) -> int | None:
            try:
                return sftp.stat(path).st_size or 0
            except FileNotFoundError:
                return None

        return self.session.call(op, "stat")

    def rename(self, src: str, dst: str) -> bool:
        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.rename(src, dst)
            except FileNotFoundError:
                return False
            return True

        return self.session.call(op, "rename")

    def publish(self, src: str, dst: str, *, sync: bool = True) -> bool:
        # SSH_FXP_RENAME (draft-ietf-secsh-filexfer-02 §6.5) does not overwrite; OpenSSH
        # implements it with link(2)+unlink(2) and answers SSH_FX_FAILURE if dst exists.
        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.rename(src, dst)
            except FileNotFoundError:
                return False
            except OSError:
                with contextlib.suppress(FileNotFoundError):
                    sftp.stat(dst)
                    return False
                raise
            return True

        return self.session.call(op, "rename")

    def remove(self, path: str) -> None:
        def op(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self.session.call(op, "remove")

    def rmdir(self, path: str) -> bool:
        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.rmdir(path)
            except OSError:
                return False
            return True

        return self.session.call(op, "rmdir")

    def touch(self, path: str) -> None:
        self.session.call(lambda sftp: sftp.utime(path, None), "utime")

    def now(self) -> float:
        """The server's clock: mtime of a file just touched there (claims age by it)."""

        def op(sftp: paramiko.SFTPClient) -> float:
            with sftp.open(posixpath.join(self.clock_dir, self._clock), "wb"):
                pass
            return float(sftp.stat(posixpath.join(self.clock_dir, self._clock)).st_mtime or 0)

        return self.session.call(op, "clock")

    def open_read(self, path: str) -> BinaryIO:
        return cast(
            BinaryIO,
            io.BufferedReader(
                _WindowReader(self.session, path, self.window), buffer_size=CHUNK_SIZE
            ),
        )

    def open_write(self, path: str, *, append: bool) -> BinaryIO:
        def op(sftp: paramiko.SFTPClient) -> paramiko.SFTPFile:
            handle = sftp.open(path, "r+b" if append else "wb")
            if append:
                handle.seek(handle.stat().st_size or 0)
            handle.set_pipelined(True)
            return handle

        return cast(BinaryIO, self.session.call(op, "open"))

    def flush_to_disk(self, fileobj: BinaryIO, path: str) -> None:
        # waits for every pipelined write to be acknowledged by the server
        fileobj.flush()

    def write_text(self, path: str, text: str) -> None:
        def op(sftp: paramiko.SFTPClient) -> None:
            with sftp.open(path, "wb") as handle:
                handle.write(text.encode())

        self.session.call(op, "write")


class SftpTransport(TransportBase):
    """A drop folder on an SFTP server; see the module docstring for URL and options."""

    scheme: ClassVar[str] = "sftp"

    def __init__(
        self,
        session: _Session,
        directory: str,
        settings: DropSettings,
        *,
        peer: str | None,
        window: int,
        poll_interval: float,
    ) -> None:
        self.session = session
        self.directory = directory
        self.poll_interval = poll_interval
        if not settings.worker:
            settings = dataclasses.replace(settings, worker=default_worker())
        self.fs = SftpFileSystem(session, window=window, worker=settings.worker)
        self.box = DropBox(self.fs, directory, settings, transport=self.scheme, peer=peer)
        self.fs.clock_dir = self.box.tmp
        self._closed = False
        self.box.prepare()

    @classmethod
    def from_url(cls, url: str, **options: object) -> SftpTransport:
        parts = urlsplit(url)
        if not parts.hostname or not parts.username:
            raise TransportConfigError(
                "URL must be sftp://user@host[:port]/folder", transport=cls.scheme
            )
        path = unquote(parts.path) or "/"
        if not path.startswith("/"):
            raise TransportConfigError("the folder must be an absolute path", transport=cls.scheme)
        opts = Options(cls.scheme, merge_query(url, options))
        settings = DropSettings.take(opts)
        key_file = opts.path("key_file")
        if key_file is None:
            raise TransportConfigError(
                "option key_file is required (key login only)",
                transport=cls.scheme,
                option="key_file",
            )
        known_hosts = opts.path("known_hosts") or Path("~/.ssh/known_hosts").expanduser()
        session = _Session(
            host=parts.hostname,
            port=parts.port or 22,
            user=unquote(parts.username),
            key_file=key_file,
            passphrase=unquote(parts.password) if parts.password else None,
            known_hosts=known_hosts,
            timeout=opts.number("timeout", 15.0, minimum=0.1),
            retries=opts.integer("retries", 3, minimum=0),
            retry_interval=opts.number("retry_interval", 0.5, minimum=0.0),
        )
        peer = opts.optional_text("peer")
        window = opts.integer("window", 2 << 20, minimum=_SFTP_REQUEST)
        poll_interval = opts.number("poll_interval", 1.0, minimum=0.01)
        opts.done()
        return cls(session, path, settings, peer=peer, window=window, poll_interval=poll_interval)

    # Each operation runs as one outermost session call: a dropped connection reconnects and
    # repeats it (an upload then resumes from the size already on the server).

    def send(self, item: Outbound) -> None:
        self.session.call(lambda _: self.box.send(item), "upload")

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        return self.session.call(
            lambda _: self.box.receive(max_items, timeout, poll_interval=self.poll_interval),
            "receive",
        )

    def acknowledge(self, delivery: Delivery) -> None:
        self.session.call(lambda _: self.box.acknowledge(delivery), "acknowledge")

    def release(self, delivery: Delivery) -> None:
        self.session.call(lambda _: self.box.release(delivery), "release")

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        self.session.call(lambda _: self.box.reject(delivery, reason_code), "reject")

    def recover(self) -> int:
        """Give back claims of crashed workers now (``receive`` also does it every minute)."""
        return self.session.call(lambda _: self.box.recover(), "recover")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TransportError):
            self.box.release_all()
            self.fs.remove(posixpath.join(self.box.tmp, self.fs._clock))
        self.session.close()
