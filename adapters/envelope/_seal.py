"""Sealing: sign with the sender's key, then encrypt for the recipient (RFC 7515 inside RFC 7516).

The content is one compact JWE whose plaintext is the sender's compact JWS; the JWS payload is
the message itself, so any JOSE library that holds the keys opens and verifies it. The signed
facts travel in the JWS protected header, member ``kcbus``::

    JWS header  {"alg": "Ed25519" | "PS512", "kid": <sender's signing kid>,
                 "typ": "kcbus-message", "cty": <media type of the message>,
                 "kcbus": {"v": 1, "id": <envelope ID>, "iat": <NumericDate>,
                           "from": <sender>, "to": <recipient>,
                           "att": [{"name", "type", "size", "sha256", "chunk"}, ...],  # manifest
                           "akey": <base64url 256-bit attachment key>}}                # if any
    JWE header  {"alg": "ECDH-ES+A256KW" | "RSA-OAEP-256", "enc": "A256GCM",
                 "kid": <recipient's encryption kid>, "cty": "JOSE",
                 "kcbus": {"v": 1, "id": <envelope ID>}}          (+ "epk" for ECDH-ES)

``to`` inside the signature stops a recipient from re-encrypting a signed message for someone
else (surreptitious forwarding, D. Davis, "Defective Sign & Encrypt", USENIX 2001); ``typ``
keeps a routing label from passing as content (RFC 8725 §3.11). The envelope ID in the JWE
header lets a transport or the ledger deduplicate without keys; opening checks it against the
signed one.

End-to-end mode adds a routing label for the bus: a second sign-then-encrypt with
``typ: kcbus-label``, payload the JSON :class:`RoutingLabel`, ``kcbus`` = ``{"v", "id", "iat",
"from", "to": <bus>, "for": <final recipient>, "content": <SHA-256 hex of the content JWE>,
"attachments": <count>}``, encrypted for the bus. The bus verifies the sender and routes;
the content stays sealed for the final recipient.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from adapters.envelope._container import (
    END,
    HEADER,
    KIND_ATTACHMENT,
    KIND_CONTENT,
    KIND_LABEL,
    record_header,
)
from adapters.envelope._errors import KeystoreError
from adapters.envelope._jose import JSON, b64e, encrypt_compact, sign_compact
from adapters.envelope._keys import from_ts, to_ts
from adapters.envelope._keystore import Keystore
from adapters.envelope._model import Attachment, ManifestEntry, RoutingLabel, check_attachment_name
from adapters.envelope._stream import CHUNK_SIZE, attachment_key, encrypt_stream, sealed_size

__all__ = ["Piece", "SealedEnvelope", "seal"]

Piece = bytes | memoryview


class _PieceReader(io.RawIOBase):
    """A read-only stream over lazily produced pieces (so a transport can stream an envelope
    that is encrypted while it is read)."""

    def __init__(self, pieces: Iterator[Piece]) -> None:
        self._pieces = pieces
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        while not self._current:
            try:
                self._current = memoryview(next(self._pieces)).cast("B")
            except StopIteration:
                return 0
        n = min(len(target), len(self._current))
        target[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


@dataclass(frozen=True)
class SealedEnvelope:
    """A sealed envelope, ready to be written: ``data()`` for small ones, ``write_to`` /
    ``open()`` / ``save`` stream it (attachments are encrypted while it is written)."""

    envelope_id: str
    sender: str
    recipient: str
    created: datetime
    signing_kid: str
    encryption_kid: str
    manifest: tuple[ManifestEntry, ...]
    size: int
    via: str | None
    #: True when the envelope is one compact JWE (no attachments, no routing label).
    is_compact: bool
    _pieces: Callable[[], Iterator[Piece]]

    def __repr__(self) -> str:
        return (f"SealedEnvelope(envelope_id={self.envelope_id!r}, sender={self.sender!r}, "
                f"recipient={self.recipient!r}, size={self.size}, "
                f"attachments={len(self.manifest)}, via={self.via!r})")

    def data(self) -> bytes:
        """The whole envelope in memory (for envelopes with big attachments use write_to)."""
        if self.is_compact:
            (token,) = self._pieces()
            return bytes(token)
        out = bytearray()
        for piece in self._pieces():  # pieces may reuse one buffer: copy each as it comes
            out += piece
        return bytes(out)

    def write_to(self, out: BinaryIO) -> int:
        """Write the envelope to ``out``; returns the number of bytes. Attachment chunks are
        written by a helper thread while the next one is encrypted."""
        if self.is_compact:
            (token,) = self._pieces()
            out.write(token)
            return len(token)
        written = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kcbus-seal") as helper:
            pending: Future[object] | None = None
            for piece in self._pieces():  # encrypts the next chunk while the last is written
                if pending is not None:
                    pending.result()
                pending = helper.submit(out.write, piece)
                written += len(piece)
            if pending is not None:
                pending.result()
        return written

    def open(self) -> BinaryIO:
        """A fresh stream of the envelope's bytes; each call encrypts anew from the files."""
        return io.BufferedReader(_PieceReader(self._pieces()), buffer_size=1 << 20)

    def save(self, path: Path) -> int:
        """Write to ``path`` atomically (temporary file, then rename)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as out:
                written = self.write_to(out)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written


def _manifest(
    attachments: Sequence[Path | Attachment], chunk_size: int
) -> tuple[list[ManifestEntry], list[Path]]:
    entries: list[ManifestEntry] = []
    paths: list[Path] = []
    for item in attachments:
        spec = item if isinstance(item, Attachment) else Attachment(Path(item))
        name = spec.name or spec.path.name
        if not check_attachment_name(name):
            raise KeystoreError(f"attachment name {name[:80]!r} is not a safe file name")
        if any(e.name == name for e in entries):
            raise KeystoreError(f"two attachments named {name!r}")
        media_type = spec.media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            with open(spec.path, "rb") as source:
                size = os.fstat(source.fileno()).st_size
                digest = hashlib.file_digest(source, "sha256").hexdigest()
        except OSError as exc:
            raise KeystoreError(f"attachment {spec.path} unreadable: {exc.strerror}") from exc
        entries.append(ManifestEntry(name, media_type, size, digest, chunk_size))
        paths.append(spec.path)
    return entries, paths


def _sign_then_encrypt(
    keystore: Keystore,
    *,
    sender: str,
    recipient: str,
    now: datetime,
    typ: str,
    cty: str,
    facts: JSON,
    payload: bytes,
    envelope_id: str,
) -> tuple[bytes, str, str]:
    sig_info, sig_key = keystore.signer(sender, now)
    enc_info, enc_key = keystore.encrypter(recipient, now)
    jws = sign_compact(
        {"alg": sig_info.alg, "kid": sig_info.kid, "typ": typ, "cty": cty, "kcbus": facts},
        payload,
        sig_key,
    )
    jwe = encrypt_compact(
        {"alg": enc_info.alg, "enc": "A256GCM", "kid": enc_info.kid, "cty": "JOSE",
         "kcbus": {"v": 1, "id": envelope_id}},
        jws,
        enc_key,
    )
    return jwe, sig_info.kid, enc_info.kid


def seal(
    message: bytes,
    *,
    sender: str,
    recipient: str,
    keystore: Keystore,
    now: datetime,
    attachments: Sequence[Path | Attachment] = (),
    media_type: str = "application/xml",
    envelope_id: str | None = None,
    via: str | None = None,
    label: RoutingLabel | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> SealedEnvelope:
    """Seal ``message`` (and ``attachments``) from ``sender`` (an identity of ``keystore``)
    for ``recipient``.

    End-to-end mode: with ``via`` (the bus) and ``label`` (its routing facts) the content is
    sealed for ``recipient`` and the label for ``via``. Attachments are hashed now and
    encrypted while the envelope is written; they must not change in between.
    """
    if (via is None) != (label is None):
        raise KeystoreError("end-to-end sealing needs both via (the bus) and a routing label")
    if not 1024 <= chunk_size <= 64 * 2**20:
        raise KeystoreError("chunk size must be between 1 KiB and 64 MiB")
    keystore.refresh()
    envelope_id = envelope_id or str(uuid.uuid4())
    iat = to_ts(now)
    entries, paths = _manifest(attachments, chunk_size)
    facts: JSON = {"v": 1, "id": envelope_id, "iat": iat, "from": sender, "to": recipient}
    akey = b""
    if entries:
        akey = os.urandom(32)
        facts["att"] = [e.to_json() for e in entries]
        facts["akey"] = b64e(akey).decode()
    content, signing_kid, encryption_kid = _sign_then_encrypt(
        keystore, sender=sender, recipient=recipient, now=now, typ="kcbus-message",
        cty=media_type, facts=facts, payload=message, envelope_id=envelope_id,
    )
    head: list[bytes] = []
    if via is not None and label is not None:
        label_facts: JSON = {
            "v": 1, "id": envelope_id, "iat": iat, "from": sender, "to": via, "for": recipient,
            "content": hashlib.sha256(content).hexdigest(), "attachments": len(entries),
        }
        label_token, _, _ = _sign_then_encrypt(
            keystore, sender=sender, recipient=via, now=now, typ="kcbus-label",
            cty="application/json", facts=label_facts,
            payload=json.dumps(label.to_json(), separators=(",", ":")).encode(),
            envelope_id=envelope_id,
        )
        head.append(record_header(KIND_LABEL, len(label_token)) + label_token)

    if not head and not entries:
        def compact() -> Iterator[Piece]:
            yield content

        size, pieces = len(content), compact
    else:
        prefix = HEADER + b"".join(head) + record_header(KIND_CONTENT, len(content)) + content
        keys = [attachment_key(akey, envelope_id, i) for i in range(len(entries))]

        def container() -> Iterator[Piece]:
            yield prefix
            for index, (entry, path) in enumerate(zip(entries, paths, strict=True)):
                yield record_header(KIND_ATTACHMENT, sealed_size(entry.size, chunk_size))
                with open(path, "rb", buffering=0) as source:
                    yield from encrypt_stream(source, entry.size, keys[index], chunk_size, index)
            yield END

        size = len(prefix) + len(END) + sum(
            9 + sealed_size(e.size, chunk_size) for e in entries
        )
        pieces = container
    return SealedEnvelope(
        envelope_id=envelope_id,
        sender=sender,
        recipient=recipient,
        created=from_ts(iat),
        signing_kid=signing_kid,
        encryption_kid=encryption_kid,
        manifest=tuple(entries),
        size=size,
        via=via,
        is_compact=not head and not entries,
        _pieces=pieces,
    )
