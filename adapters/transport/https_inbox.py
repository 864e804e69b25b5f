"""The HTTPS inbox: partners POST sealed envelopes over mutual TLS; kcbus drains a local spool.

Server stack: the standard library's ``ssl`` + ``http.server.ThreadingHTTPServer``. It exposes
the verified client certificate (``SSLSocket.getpeercert()``), streams request bodies to disk
in fixed-size chunks, and the TLS handshake runs in the connection's own thread (a slow client
cannot stall the accept loop).

API (also served as OpenAPI 3.1 at ``GET <base>/openapi.json``)::

    POST <base>/envelopes      body: the sealed envelope (application/jose or
                               application/octet-stream), Content-Length required,
                               header Idempotency-Key: <envelope id>
      202 {"receipt_id", "envelope_id", "size", "duplicate": false}   accepted, on disk
      200 {... "duplicate": true}     this partner sent this envelope id before: same receipt
      400 bad request               411 no Content-Length
      403 unknown partner / certificate's partner is not the envelope's sender
      413 larger than max_size      429 ledger behind: Retry-After: <seconds>
      500 the inbox could not store it (retry later)          503 too many connections
    GET <base>/openapi.json

Errors are RFC 9457 problem documents with kcbus's ``reason_code``.

Invariants, in the order a request is checked:

1. The TLS layer only admits client certificates issued by ``client_ca``. ``peer_of(cert)`` maps
   the certificate to a partner id (default: a SAN URI ``urn:kcbus:partner:<id>``, else the
   subject CN); no partner → 403 before the body is read.
2. Size (413), back-pressure (429 when ``backlog()`` ≥ ``max_backlog``) and duplicates (200) are
   answered before the body is read; with ``Expect: 100-continue`` before it is even sent.
3. The body is streamed to ``<spool>/.tmp``; a short or timed-out body is discarded.
4. ``sender_of(stream)`` names the envelope's sender (the runtime plugs in the envelope
   library); if it is not the certificate's partner → 403 and the envelope is discarded.
5. Only then is the file flushed to disk and renamed into the spool, and only then does the
   partner get 202 with the receipt id. A 202 therefore means "on disk": a crash after it loses
   nothing; a crash before it makes the partner retry with the same Idempotency-Key, and the
   receipt id is a function of (partner, envelope id), so the retry gets the same receipt.

The spool is a drop folder (:mod:`adapters.transport._dropbox`) whose files start with one
header line (partner, envelope id, receipt id): :class:`HttpsInbox` hands them out as
deliveries with ``peer`` = the partner of the certificate.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import posixpath
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, ClassVar, cast

from adapters.transport._base import CHUNK_SIZE, Delivery, Outbound, TransportBase
from adapters.transport._dropbox import DropBox, DropSettings, SpoolHeader
from adapters.transport._errors import TransportConfigError
from adapters.transport.filedrop import LocalFileSystem, pid_alive
from xoev import KcbusError, PartnerFault

__all__ = [
    "PARTNER_URI_PREFIX",
    "BacklogProbe",
    "HttpsInbox",
    "InboxServer",
    "PeerOf",
    "SenderOf",
    "default_peer_of",
    "openapi_document",
]

log = logging.getLogger(__name__)

#: Maps a verified client certificate (``SSLSocket.getpeercert()``) to a partner id or None.
PeerOf = Callable[[dict[str, object]], str | None]
#: Reads the envelope (a stream at its start) and returns the sender's partner id.
SenderOf = Callable[[BinaryIO], str]
#: How many messages the ledger has not processed yet (back-pressure).
BacklogProbe = Callable[[], int]

PARTNER_URI_PREFIX = "urn:kcbus:partner:"
_RECEIPT_NAMESPACE = uuid.UUID("6f1d8f52-3c1e-5b8e-9a55-6b6375732d69")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")
# After an answer given before the body was read, how much of the body the inbox still reads
# and drops, and for how long, before it closes the connection (see Handler._drain). A retry
# of an envelope we hold is a partner's legitimate upload: read it (it fits max_size). For a
# refusal, what matters is that the answer leaves before the close: a little is enough, and
# a busy or refusing inbox should not spend its slots on bodies it does not want.
_DRAIN_DUPLICATE = (64 << 20, 10.0)
_DRAIN_REFUSAL = (1 << 20, 2.0)


def default_peer_of(cert: dict[str, object]) -> str | None:
    """Partner id from a SAN URI ``urn:kcbus:partner:<id>``, else from the subject CN."""
    for kind, value in cast(tuple[tuple[str, str], ...], cert.get("subjectAltName", ())):
        if kind == "URI" and value.startswith(PARTNER_URI_PREFIX):
            return value[len(PARTNER_URI_PREFIX):] or None
    for rdn in cast(tuple[tuple[tuple[str, str], ...], ...], cert.get("subject", ())):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def receipt_id_for(peer: str, envelope_id: str) -> str:
    """The receipt id is a function of (partner, envelope id): a retry gets the same one."""
    return str(uuid.uuid5(_RECEIPT_NAMESPACE, f"{peer}\n{envelope_id}"))


def openapi_document(base: str, max_size: int) -> dict[str, object]:
    problem = {"description": "RFC 9457 problem", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "kcbus inbox", "version": "1.0.0",
                 "description": "Partners deliver sealed envelopes (JWE) to kcbus. The client "
                                "certificate identifies the partner and must match the "
                                "envelope's sender."},
        "servers": [{"url": base or "/"}],
        "security": [{"partnerCertificate": []}],
        "paths": {"/envelopes": {"post": {
            "operationId": "deliverEnvelope",
            "summary": "Deliver one sealed envelope",
            "parameters": [
                {"name": "Idempotency-Key", "in": "header", "required": True,
                 "description": "The envelope id; repeating a delivery with the same key is "
                                "safe and returns the same receipt.",
                 "schema": {"type": "string", "pattern": _SAFE_KEY.pattern}},
                {"name": "Content-Length", "in": "header", "required": True,
                 "schema": {"type": "integer", "maximum": max_size}},
            ],
            "requestBody": {"required": True, "content": {
                "application/jose": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType":
                                                            "application/octet-stream"}},
            }},
            "responses": {
                "202": {"description": "Accepted and stored",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Receipt"}}}},
                "200": {"description": "Already delivered earlier (same receipt)",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Receipt"}}}},
                "400": problem, "403": problem, "411": problem, "413": problem,
                "429": {**problem, "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                "500": problem, "503": problem,
            },
        }}},
        "components": {
            "securitySchemes": {"partnerCertificate": {
                "type": "mutualTLS",
                "description": "Client certificate issued to the partner; SAN URI "
                               f"{PARTNER_URI_PREFIX}<partner id>"}},
            "schemas": {
                "Receipt": {"type": "object", "required": ["receipt_id", "duplicate"],
                            "properties": {"receipt_id": {"type": "string", "format": "uuid"},
                                           "envelope_id": {"type": "string"},
                                           "size": {"type": "integer"},
                                           "duplicate": {"type": "boolean"}}},
                "Problem": {"type": "object",
                            "properties": {"type": {"type": "string"},
                                           "title": {"type": "string"},
                                           "status": {"type": "integer"},
                                           "reason_code": {"type": "string"}}},
            },
        },
    }


class _Refusal(Exception):
    def __init__(self, status: int, reason_code: str, title: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status, self.reason_code, self.title = status, reason_code, title
        self.headers = headers or {}


class InboxServer:
    """The HTTPS server in front of a spool folder. ``start()`` serves in a background thread."""

    def __init__(self, *, host: str, port: int, base_path: str, ssl_context: ssl.SSLContext,
                 spool: DropBox, sender_of: SenderOf | None, peer_of: PeerOf = default_peer_of,
                 backlog: BacklogProbe | None = None, max_backlog: int = 10_000,
                 retry_after: int = 30, max_size: int = 512 << 20, read_timeout: float = 30.0,
                 max_connections: int = 64) -> None:
        self.base = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.ssl_context = ssl_context
        self.spool = spool
        self.sender_of = sender_of
        self.peer_of = peer_of
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.retry_after = retry_after
        self.max_size = max_size
        self.read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._openapi = json.dumps(openapi_document(self.base, max_size)).encode()
        self._httpd = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"kcbus-inbox-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    # -- the request pipeline ---------------------------------------------------------------

    def check_before_body(self, peer: str | None, headers: dict[str, str]) -> tuple[str, str, int]:
        """Checks 1-2 of the module docstring; returns (peer, envelope id, length)."""
        if peer is None:
            raise _Refusal(403, "unknown-partner", "certificate names no known partner")
        length_text = headers.get("content-length")
        if length_text is None:
            raise _Refusal(411, "length-required", "Content-Length is required")
        if not length_text.isdigit():
            raise _Refusal(400, "bad-request", "Content-Length is not a number")
        length = int(length_text)
        if length > self.max_size:
            raise _Refusal(413, "too-large", f"the inbox accepts at most {self.max_size} bytes")
        key = headers.get("idempotency-key", "")
        if not _SAFE_KEY.match(key):
            raise _Refusal(400, "idempotency-key",
                           "Idempotency-Key (the envelope id) is missing or malformed")
        if self.backlog is not None and self.backlog() >= self.max_backlog:
            raise _Refusal(429, "backlog", "the bus is behind; retry later",
                           {"Retry-After": str(self.retry_after)})
        return peer, key, length

    def store(self, peer: str, envelope_id: str, length: int, body: BinaryIO) -> tuple[str, bool]:
        """Checks 3-5: stream to .tmp, check the sender, publish. Returns (receipt, duplicate)."""
        receipt = receipt_id_for(peer, envelope_id)
        name = f"{receipt}{self.spool.settings.suffix}"
        fs = self.spool.fs
        part = posixpath.join(self.spool.tmp, f"{name}.{threading.get_ident()}.part")
        header = SpoolHeader(peer=peer, envelope_id=envelope_id, receipt_id=receipt).encode()
        try:
            with fs.open_write(part, append=False) as out:
                out.write(header)
                left = length
                while left:
                    chunk = body.read(min(CHUNK_SIZE, left))
                    if not chunk:
                        raise _Refusal(400, "incomplete", "the body ended early")
                    out.write(chunk)
                    left -= len(chunk)
                out.flush()
            if self.sender_of is not None:
                with fs.open_read(part) as envelope:
                    envelope.seek(len(header))
                    try:
                        sender = self.sender_of(envelope)
                    except PartnerFault as exc:
                        raise _Refusal(400, exc.reason_code,
                                       "the envelope's sender cannot be read") from exc
                if sender != peer:
                    raise _Refusal(403, "sender-mismatch",
                                   "the client certificate does not belong to the envelope's "
                                   "sender")
            with fs.open_write(part, append=True) as out:
                fs.flush_to_disk(out, part)
            if self.spool.known(name) or not fs.publish(part, posixpath.join(self.spool.dir,
                                                                             name)):
                return receipt, True
            return receipt, False
        finally:
            fs.remove(part)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # many partners at once; the kernel's default backlog of 5 drops bursts
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        # failed TLS handshakes (no/foreign client certificate) and vanished clients: the
        # partner sees the failure; no traceback on our stderr
        log.debug("inbox: connection from %s failed", client_address, exc_info=True)


def _handler_for(inbox: InboxServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kcbus-inbox/1"
        sys_version = ""
        peer: str | None = None

        def setup(self) -> None:
            raw = cast(socket.socket, self.request)
            raw.settimeout(inbox.read_timeout)
            # headers and body go out as separate writes: without TCP_NODELAY, Nagle's
            # algorithm and the peer's delayed ACK add ~40 ms to every response (RFC 1122 §4.2.3.2)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # handshake here, in this connection's thread, not in the accept loop
            self.request = self.connection = inbox.ssl_context.wrap_socket(raw, server_side=True)
            super().setup()
            cert = cast(ssl.SSLSocket, self.connection).getpeercert()
            self.peer = inbox.peer_of(cast(dict[str, object], cert)) if cert else None

        def handle(self) -> None:
            if not inbox._slots.acquire(blocking=False):
                # answered before the request line is read: what send_response logs
                self.requestline, self.command, self.request_version = "-", "", "HTTP/1.1"
                with contextlib.suppress(OSError):
                    self._refuse(_Refusal(503, "busy", "too many connections",
                                          {"Retry-After": "5"}), close=True)
                    self._drain(*_DRAIN_REFUSAL)
                return
            try:
                super().handle()
            except (OSError, ssl.SSLError):
                pass  # the client went away or timed out: nothing was accepted
            finally:
                inbox._slots.release()

        def handle_expect_100(self) -> bool:
            try:
                _, envelope_id, length = inbox.check_before_body(self.peer, self._headers())
                duplicate = self._check_duplicate()
            except _Refusal as refusal:
                self._refuse(refusal, close=True)
                self._drain(*_DRAIN_REFUSAL)
                return False
            if duplicate is not None:
                # the client waits for our word before sending the body: it need not send it
                self._receipt(200, duplicate, envelope_id, length, True, close=True)
                self._drain(*_DRAIN_REFUSAL)
                return False
            return super().handle_expect_100()

        def _drain(self, budget: int, seconds: float) -> None:
            """Read and drop what the client still sends after an answer given before its body
            was read, then let the connection close. Closing a socket with unread bytes makes
            the kernel send a reset, and a reset can destroy the answer before the client (or
            a proxy between us) has read it; a partner whose retry of an envelope we already
            hold never saw its 200 would retry forever. This is the "lingering close" of
            RFC 9112 §9.6, bounded by ``budget`` bytes and ``seconds`` so a client cannot hold
            a slot."""
            headers = self._headers() if hasattr(self, "headers") else {}
            length_text = headers.get("content-length", "")
            left = min(int(length_text), budget) if length_text.isdigit() else budget
            deadline = time.monotonic() + min(seconds, inbox.read_timeout)
            try:
                while left > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.connection.settimeout(remaining)
                    chunk = self.rfile.read1(min(CHUNK_SIZE, left))
                    if not chunk:
                        return
                    left -= len(chunk)
            except (OSError, ssl.SSLError):
                return  # the client is gone or slow: nothing more to protect

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _check_duplicate(self) -> str | None:
            key = self._headers().get("idempotency-key", "")
            if self.peer is None or not key:
                return None
            receipt = receipt_id_for(self.peer, key)
            if inbox.spool.known(f"{receipt}{inbox.spool.settings.suffix}"):
                return receipt
            return None

        def do_GET(self) -> None:
            if self.path.split("?")[0] == f"{inbox.base}/openapi.json":
                self._reply(200, inbox._openapi, "application/json")
            else:
                self._refuse(_Refusal(404, "not-found", "no such resource"))

        def do_POST(self) -> None:
            if self.path.split("?")[0] != f"{inbox.base}/envelopes":
                self._refuse(_Refusal(404, "not-found", "no such resource"), close=True)
                self._drain(*_DRAIN_REFUSAL)
                return
            storing = False  # until then, any answer comes before the body (see _drain)
            try:
                peer, envelope_id, length = inbox.check_before_body(self.peer, self._headers())
                duplicate = self._check_duplicate()
                if duplicate is not None:
                    # answer without storing the body again; close so it is not parsed
                    self._receipt(200, duplicate, envelope_id, length, True, close=True)
                    self._drain(*_DRAIN_DUPLICATE)
                    return
                storing = True
                receipt, dup = inbox.store(peer, envelope_id, length,
                                           cast(BinaryIO, self.rfile))
            except _Refusal as refusal:
                self._refuse(refusal, close=True)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                self.close_connection = True  # body never completed: nothing accepted
                return
            except KcbusError as exc:
                log.warning("inbox: refused an envelope from %s: %s", self.peer,
                            exc.reason_code)
                self._refuse(_Refusal(500, exc.reason_code, "the inbox could not store it"),
                             close=True)
            except Exception:
                log.exception("inbox: storing an envelope from %s failed", self.peer)
                self._refuse(_Refusal(500, "internal", "the inbox could not store it"),
                             close=True)
            else:
                self._receipt(200 if dup else 202, receipt, envelope_id, length, dup)
                return
            if not storing:
                self._drain(*_DRAIN_REFUSAL)

        def _receipt(self, status: int, receipt: str, envelope_id: str, size: int,
                     duplicate: bool, *, close: bool = False) -> None:
            body = json.dumps({"receipt_id": receipt, "envelope_id": envelope_id,
                               "size": size, "duplicate": duplicate}).encode()
            self._reply(status, body, "application/json", close=close)

        def _refuse(self, refusal: _Refusal, *, close: bool = False) -> None:
            body = json.dumps({"type": "about:blank", "title": refusal.title,
                               "status": refusal.status,
                               "reason_code": refusal.reason_code}).encode()
            self._reply(refusal.status, body, "application/problem+json", refusal.headers,
                        close=close)

        def _reply(self, status: int, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None, *, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # ids, statuses and partners only (the request line holds no content)
            log.debug("inbox %s: " + format, self.peer, *args)

    return Handler


def server_context(cert_file: Path, key_file: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2, client certificate required and verified against ``client_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class HttpsInbox(TransportBase):
    """Receive side of HTTPS: the inbox server (optional, ``serve``) plus its spool folder."""

    scheme: ClassVar[str] = "https"

    def __init__(self, spool_dir: Path, *, server: InboxServer | None,
                 settings: DropSettings, poll_interval: float = 0.2) -> None:
        self.spool_dir = spool_dir
        self.server = server
        self.poll_interval = poll_interval
        self.box = (server.spool if server is not None else
                    DropBox(LocalFileSystem(), str(spool_dir), settings, transport=self.scheme,
                            framed=True, pid_alive=pid_alive))
        self.box.prepare()
        self._closed = False
        if server is not None:
            server.start()

    @property
    def url(self) -> str:
        """Where partners POST (``.../envelopes``), with the port actually bound."""
        if self.server is None:
            raise TransportConfigError("this inbox does not serve (serve=false)",
                                       transport=self.scheme)
        return f"https://{self.server.host}:{self.server.port}{self.server.base}"

    def send(self, item: Outbound) -> None:
        raise TransportConfigError("an inbox only receives; send with an https URL "
                                   "without listen=true", transport=self.scheme, option="listen")

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        return self.box.receive(max_items, timeout, poll_interval=self.poll_interval)

    def acknowledge(self, delivery: Delivery) -> None:
        self.box.acknowledge(delivery)

    def release(self, delivery: Delivery) -> None:
        self.box.release(delivery)

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        self.box.reject(delivery, reason_code)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.server is not None:
            self.server.stop()
        self.box.release_all()

