"""``https://`` — sealed envelopes over HTTPS with mutual TLS: outbox client and inbox server.

Two roles behind one scheme:

* **Outbox** (default): kcbus POSTs envelopes to a partner's endpoint (httpx). The client
  presents its certificate (``cert_file``/``key_file``), trusts only ``ca_file`` for the
  server (CA pinning; the system store is not used), sends ``Idempotency-Key: <envelope id>``
  so a repeated POST after a timeout or a dropped connection is recognised by the peer, and
  streams the body with its ``Content-Length`` (constant memory). One POST per ``send()``:
  retries with backoff are the runtime's (it knows the retry budget and DEAD).
* **Inbox** (``listen=true``): an HTTPS server for partners, see
  :mod:`adapters.transport.https_inbox` (API, OpenAPI document, the order of checks,
  ``sender_of``/``peer_of``/``backlog`` hooks). ``receive()`` hands out what the server stored.

URLs: outbox ``https://partner.example:8443/kcbus`` (POSTs go to ``<url>/envelopes``);
inbox ``https://0.0.0.0:8443/kcbus?listen=true`` (bind address and base path; port 0 = any).

Outbox options (defaults): ``cert_file``, ``key_file`` (client certificate; required),
``ca_file`` (required: the CA or the self-signed certificate that the partner's server must
present), ``connect_timeout`` (10 s), ``read_timeout`` (60 s: the peer answers after storing
the envelope), ``write_timeout`` (60 s), ``content_type`` (``application/jose``).

Inbox options (defaults): ``listen`` (false), ``cert_file``, ``key_file`` (server certificate),
``client_ca`` (CA of partner certificates), ``spool_dir`` (required), ``serve`` (true; false =
only drain a spool that another process serves), ``max_size`` (512 MiB), ``max_backlog``
(10,000), ``retry_after`` (30 s), ``fsync`` (true: the envelope is on disk before the 202),
``read_timeout`` (30 s per socket operation), ``max_connections`` (64), ``poll_interval``
(0.2 s), ``suffix``/``worker``/``claim_timeout`` (spool, as for ``file://``), ``max_bytes``
(``max_size``: the largest spooled envelope ``receive()`` hands out to be read; it matters
when another process with a larger ``max_size`` serves the spool); from Python only:
``sender_of`` (envelope stream → sender id), ``peer_of`` (certificate → partner id),
``backlog`` (() → pending count).

Errors of the outbox: connection refused/reset/closed, timeouts, HTTP 5xx →
:class:`TransportUnavailable` (recoverable; the same Idempotency-Key makes the retry safe);
HTTP 429/503 → :class:`PeerBusy` (recoverable, with ``retry_after``); other HTTP 4xx (403 sender
mismatch, 413 too large, ...) → :class:`DeliveryRefused` (permanent, with the peer's
``reason_code``); an untrusted server certificate or unreadable key files →
:class:`TransportConfigError`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

import httpx

from adapters.transport._base import CHUNK_SIZE, Delivery, Outbound, Transport, TransportBase
from adapters.transport._dropbox import DropBox, DropSettings
from adapters.transport._errors import (
    DeliveryRefused,
    PeerBusy,
    TransportConfigError,
    TransportUnavailable,
)
from adapters.transport._options import Options, merge_query
from adapters.transport.filedrop import LocalFileSystem, pid_alive
from adapters.transport.https_inbox import (
    BacklogProbe,
    HttpsInbox,
    InboxServer,
    PeerOf,
    SenderOf,
    default_peer_of,
    server_context,
)

__all__ = ["HttpsOutbox", "from_url"]

_SCHEME = "https"


def from_url(url: str, **options: object) -> Transport:
    """``connect()`` entry: the inbox with ``listen=true``, else the outbox client."""
    opts = Options(_SCHEME, merge_query(url, options))
    if opts.boolean("listen", False):
        return _inbox_from(url, opts)
    return _outbox_from(url, opts)


def _required(opts: Options, name: str) -> Path:
    path = opts.path(name)
    if path is None:
        raise TransportConfigError(f"option {name} is required", transport=_SCHEME, option=name)
    return path


def _outbox_from(url: str, opts: Options) -> HttpsOutbox:
    outbox = HttpsOutbox(
        url,
        cert_file=_required(opts, "cert_file"),
        key_file=_required(opts, "key_file"),
        ca_file=_required(opts, "ca_file"),
        connect_timeout=opts.number("connect_timeout", 10.0, minimum=0.1),
        read_timeout=opts.number("read_timeout", 60.0, minimum=0.1),
        write_timeout=opts.number("write_timeout", 60.0, minimum=0.1),
        content_type=opts.text("content_type", "application/jose"),
    )
    opts.done()
    return outbox


def _inbox_from(url: str, opts: Options) -> HttpsInbox:
    parts = urlsplit(url)
    max_size = opts.integer("max_size", 512 << 20, minimum=1)
    settings = DropSettings(
        suffix=opts.text("suffix", ".env"),
        worker=opts.text("worker", ""),
        claim_timeout=opts.number("claim_timeout", 900.0, minimum=1.0),
        max_bytes=opts.integer("max_bytes", max_size, minimum=1),
    )
    spool_dir = _required(opts, "spool_dir")
    serve = opts.boolean("serve", True)
    fsync = opts.boolean("fsync", True)
    poll_interval = opts.number("poll_interval", 0.2, minimum=0.01)
    server: InboxServer | None = None
    if serve:
        cert_file, key_file = _required(opts, "cert_file"), _required(opts, "key_file")
        client_ca = _required(opts, "client_ca")
        try:
            context = server_context(cert_file, key_file, client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TransportConfigError(
                "server certificate, key or client CA unreadable", transport=_SCHEME
            ) from exc
        spool = DropBox(
            LocalFileSystem(fsync=fsync),
            str(spool_dir),
            settings,
            transport=_SCHEME,
            framed=True,
            pid_alive=pid_alive,
        )
        try:
            server = InboxServer(
                host=parts.hostname or "127.0.0.1",
                port=parts.port if parts.port is not None else 443,
                base_path=parts.path,
                ssl_context=context,
                spool=spool,
                sender_of=cast(SenderOf | None, opts.function("sender_of")),
                peer_of=cast(PeerOf, opts.function("peer_of") or default_peer_of),
                backlog=cast(BacklogProbe | None, opts.function("backlog")),
                max_backlog=opts.integer("max_backlog", 10_000, minimum=1),
                retry_after=opts.integer("retry_after", 30, minimum=0),
                max_size=max_size,
                read_timeout=opts.number("read_timeout", 30.0, minimum=0.1),
                max_connections=opts.integer("max_connections", 64, minimum=1),
            )
        except OSError as exc:
            raise TransportConfigError(
                f"cannot listen on {parts.netloc} ({exc.errno})", transport=_SCHEME
            ) from exc
    opts.done()
    return HttpsInbox(spool_dir, server=server, settings=settings, poll_interval=poll_interval)


class HttpsOutbox(TransportBase):
    """POSTs envelopes to a partner's HTTPS endpoint; see the module docstring."""

    scheme: ClassVar[str] = _SCHEME

    def __init__(
        self,
        url: str,
        *,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        write_timeout: float = 60.0,
        content_type: str = "application/jose",
    ) -> None:
        parts = urlsplit(url)
        self.endpoint = urlunsplit(
            (
                parts.scheme,
                parts.hostname or "" if parts.port is None else f"{parts.hostname}:{parts.port}",
                parts.path.rstrip("/"),
                "",
                "",
            )
        )
        self.target = f"{self.endpoint}/envelopes"
        self.content_type = content_type
        try:
            context = ssl.create_default_context(cafile=str(ca_file))  # pinned: only this CA
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(cert_file), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise TransportConfigError(
                "client certificate, key or CA file unreadable",
                transport=self.scheme,
                endpoint=self.endpoint,
            ) from exc
        self._client = httpx.Client(
            verify=context,
            http2=False,
            follow_redirects=False,
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=write_timeout,
                pool=connect_timeout,
            ),
        )
        #: receipt id of the last accepted envelope (the peer's answer), for logs and tests
        self.last_receipt: str | None = None

    def send(self, item: Outbound) -> None:
        headers = {
            "Idempotency-Key": item.envelope_id,
            "Content-Type": self.content_type,
            "Content-Length": str(item.size),
        }
        try:
            with item.stream() as source:
                response = self._client.post(self.target, content=_chunks(source), headers=headers)
        except httpx.ConnectError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise TransportConfigError(
                    "the server certificate is not trusted (ca_file)",
                    transport=self.scheme,
                    endpoint=self.endpoint,
                ) from exc
            raise TransportUnavailable(
                "cannot connect", transport=self.scheme, endpoint=self.endpoint
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransportUnavailable(
                f"timed out ({type(exc).__name__})", transport=self.scheme, endpoint=self.endpoint
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            raise TransportUnavailable(
                f"connection failed ({type(exc).__name__})",
                transport=self.scheme,
                endpoint=self.endpoint,
            ) from exc
        self._check(response)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            try:
                self.last_receipt = str(response.json().get("receipt_id"))
            except (ValueError, AttributeError):
                self.last_receipt = None
            return
        reason = _reason_code(response)
        if status in (429, 503):
            raise PeerBusy(
                f"peer busy (HTTP {status})",
                transport=self.scheme,
                endpoint=self.endpoint,
                status=status,
                retry_after=_retry_after(response),
            )
        if status in (408,) or status >= 500:
            raise TransportUnavailable(
                f"peer failed (HTTP {status})", transport=self.scheme, endpoint=self.endpoint
            )
        raise DeliveryRefused(
            f"peer refused the envelope (HTTP {status}, {reason})",
            transport=self.scheme,
            endpoint=self.endpoint,
            status=status,
            peer_reason=reason,
        )

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        raise TransportConfigError(
            "an https outbox only sends; receive with listen=true",
            transport=self.scheme,
            option="listen",
        )

    def acknowledge(self, delivery: Delivery) -> None:
        self.receive(0)

    def release(self, delivery: Delivery) -> None:
        self.receive(0)

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        self.receive(0)

    def close(self) -> None:
        self._client.close()


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is in the chain behind ``exc`` (httpx wraps httpcore's error, which
    wraps the ``ssl`` module's): decided by type, never by the text of a message."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
    return False


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(CHUNK_SIZE):
        yield chunk


def _reason_code(response: httpx.Response) -> str | None:
    try:
        data = json.loads(response.content[:65536])
    except ValueError:
        return None
    code = data.get("reason_code") if isinstance(data, dict) else None
    return str(code) if code is not None else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
