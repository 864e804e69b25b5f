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

Attachments are read once when the envelope is saved to a file (:meth:`SealedEnvelope.save`):
each chunk is hashed and encrypted in the same pass, the attachment records are written after
room left for the label and content records, and those are sealed and written into that room
at the end, when the manifest digests are known (their length is fixed in advance, see
:func:`~adapters.envelope._jose.compact_length`). The bytes are the same as when written in
order. Envelopes streamed in order (:meth:`~SealedEnvelope.data`, ``open``, ``write_to``)
hash the attachments first, then encrypt them while they are written.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
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
from adapters.envelope._jose import (
    JSON,
    EncryptKey,
    SignKey,
    b64e,
    compact_length,
    encrypt_compact,
    sign_compact,
)
from adapters.envelope._keys import KeyInfo, from_ts, to_ts
from adapters.envelope._keystore import Keystore
from adapters.envelope._model import Attachment, ManifestEntry, RoutingLabel, check_attachment_name
from adapters.envelope._stream import (
    CHUNK_SIZE,
    attachment_key,
    encrypt_stream,
    seal_chunks,
    sealed_size,
)

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


@dataclass(frozen=True, slots=True)
class _Keys:
    """The keys of one sign-then-encrypt, picked when ``seal`` is called."""

    signer: KeyInfo
    sign_key: SignKey
    recipient: KeyInfo
    encrypt_key: EncryptKey

    @classmethod
    def pick(cls, keystore: Keystore, sender: str, recipient: str, now: datetime) -> _Keys:
        sig_info, sig_key = keystore.signer(sender, now)
        enc_info, enc_key = keystore.encrypter(recipient, now)
        return cls(sig_info, sig_key, enc_info, enc_key)

    def _headers(self, typ: str, cty: str, facts: JSON, envelope_id: str) -> tuple[JSON, JSON]:
        return (
            {
                "alg": self.signer.alg,
                "kid": self.signer.kid,
                "typ": typ,
                "cty": cty,
                "kcbus": facts,
            },
            {
                "alg": self.recipient.alg,
                "enc": "A256GCM",
                "kid": self.recipient.kid,
                "cty": "JOSE",
                "kcbus": {"v": 1, "id": envelope_id},
            },
        )

    def seal(self, typ: str, cty: str, facts: JSON, payload: bytes, envelope_id: str) -> bytes:
        jws_header, jwe_header = self._headers(typ, cty, facts, envelope_id)
        return encrypt_compact(
            jwe_header, sign_compact(jws_header, payload, self.sign_key), self.encrypt_key
        )

    def length(self, typ: str, cty: str, facts: JSON, payload_length: int, envelope_id: str) -> int:
        jws_header, jwe_header = self._headers(typ, cty, facts, envelope_id)
        return compact_length(
            jws_header, payload_length, self.sign_key, jwe_header, self.encrypt_key
        )


@dataclass(frozen=True, slots=True)
class _Source:
    """An attachment to be sealed: the manifest facts known before reading it."""

    name: str
    media_type: str
    size: int
    path: Path


# Stands in for a SHA-256 hex digest while the content record's length is computed: every
# digest has 64 characters.
_DIGEST_PLACEHOLDER = "0" * 64


class _Container:
    """What a container envelope needs to be written: the signed content (and label) once the
    attachment digests are known, the attachment keys, and the layout."""

    def __init__(
        self,
        *,
        keys: _Keys,
        label_keys: _Keys | None,
        label: RoutingLabel | None,
        via: str | None,
        message: bytes,
        media_type: str,
        facts: JSON,
        sources: list[_Source],
        chunk_size: int,
    ) -> None:
        self.keys, self.label_keys, self.via = keys, label_keys, via
        self.message, self.media_type, self.facts = message, media_type, facts
        self.sources, self.chunk_size = sources, chunk_size
        self.envelope_id = str(facts["id"])
        self.label_payload = (
            b"" if label is None else json.dumps(label.to_json(), separators=(",", ":")).encode()
        )
        self.akey = os.urandom(32) if sources else b""
        self.digests: list[str] | None = None if sources else []
        self._written = False
        self._lock = threading.Lock()
        # Without attachments there is no attachment key: every write is the same bytes.
        self._shared = None if sources else _Write(b"", [])

    def begin_write(self) -> _Write:
        """The keys of one write. Attachment keys and nonces are a function of ``akey``, chunk
        and position: one key may encrypt one plaintext only. A second write of the same
        envelope could meet a changed file (GCM nonce reuse leaks the XOR of both plaintexts),
        so every write after the first — also one started while another still streams —
        draws its own ``akey`` and re-signs the content: a differently encrypted copy of the
        same envelope (same ID and creation time)."""
        if self._shared is not None:
            return self._shared
        with self._lock:
            if not self._written:
                self._written = True
                return _Write(self.akey, self.digests)
        return _Write(os.urandom(32), None)

    def keys_for(self, write: _Write, index: int) -> bytes:
        return attachment_key(write.akey, self.envelope_id, index)

    def manifest(self, digests: Sequence[str]) -> list[ManifestEntry]:
        return [
            ManifestEntry(s.name, s.media_type, s.size, d, self.chunk_size)
            for s, d in zip(self.sources, digests, strict=True)
        ]

    def _content_facts(self, digests: Sequence[str], akey: bytes) -> JSON:
        facts = dict(self.facts)
        if self.sources:
            facts["att"] = [e.to_json() for e in self.manifest(digests)]
            facts["akey"] = b64e(akey).decode()
        return facts

    def _label_facts(self, content_sha256: str) -> JSON:
        return {
            "v": 1,
            "id": self.envelope_id,
            "iat": self.facts["iat"],
            "from": self.facts["from"],
            "to": self.via,
            "for": self.facts["to"],
            "content": content_sha256,
            "attachments": len(self.sources),
        }

    def prefix_length(self) -> int:
        """Length of :meth:`prefix`, known before the digests are."""
        placeholders = [_DIGEST_PLACEHOLDER] * len(self.sources)
        content = self.keys.length(
            "kcbus-message",
            self.media_type,
            self._content_facts(placeholders, self.akey),
            len(self.message),
            self.envelope_id,
        )
        length = len(HEADER) + 9 + content
        if self.label_keys is not None:
            length += 9 + self.label_keys.length(
                "kcbus-label",
                "application/json",
                self._label_facts(_DIGEST_PLACEHOLDER),
                len(self.label_payload),
                self.envelope_id,
            )
        return length

    def hash_sources(self) -> list[str]:
        """The digests, by a read of every attachment (for writing in order)."""
        digests = []
        for source in self.sources:
            try:
                with open(source.path, "rb") as handle:
                    digests.append(hashlib.file_digest(handle, "sha256").hexdigest())
            except OSError as exc:
                raise KeystoreError(f"attachment {source.path} unreadable: {exc.strerror}") from exc
        return digests

    def prefix(self, write: _Write) -> bytes:
        """Container header, label and content records of ``write``: sealed now if not yet."""
        if write.prefix is None:
            if write.digests is None:
                write.digests = self.hash_sources()
            content = self.keys.seal(
                "kcbus-message",
                self.media_type,
                self._content_facts(write.digests, write.akey),
                self.message,
                self.envelope_id,
            )
            head = [HEADER]
            if self.label_keys is not None:
                label = self.label_keys.seal(
                    "kcbus-label",
                    "application/json",
                    self._label_facts(hashlib.sha256(content).hexdigest()),
                    self.label_payload,
                    self.envelope_id,
                )
                head += [record_header(KIND_LABEL, len(label)), label]
            head += [record_header(KIND_CONTENT, len(content)), content]
            write.prefix = b"".join(head)
            if self.digests is None:  # what :attr:`SealedEnvelope.manifest` shows
                self.digests = write.digests
        return write.prefix

    def size(self) -> int:
        return (
            self.prefix_length()
            + len(END)
            + sum(9 + sealed_size(s.size, self.chunk_size) for s in self.sources)
        )

    def pieces(self) -> Iterator[Piece]:
        """The envelope in order (attachments hashed first)."""
        write = self.begin_write()
        yield self.prefix(write)
        for index, source in enumerate(self.sources):
            yield record_header(KIND_ATTACHMENT, sealed_size(source.size, self.chunk_size))
            with _open_source(source) as handle:
                yield from encrypt_stream(
                    handle, source.size, self.keys_for(write, index), self.chunk_size, index
                )
        yield END

    def write_in_order(self, out: BinaryIO) -> int:
        """Write the envelope in order (attachments hashed first); returns the bytes written."""
        write = self.begin_write()
        out.write(self.prefix(write))
        self._write_attachments(out, write, digests=None)
        out.write(END)
        return self.size()

    def write_in_one_pass(self, out: BinaryIO) -> int:
        """Write to a seekable ``out``, reading each attachment once: attachment records
        first, after room for the prefix, then the prefix into that room."""
        write = self.begin_write()
        start = out.tell()
        room = self.prefix_length()
        out.seek(start + room)
        digests: list[str] = []
        self._write_attachments(out, write, digests=digests)
        out.write(END)
        end = out.tell()
        write.digests = digests
        prefix = self.prefix(write)
        if len(prefix) != room:  # compact_length disagrees with the serializer: a bug here
            raise KeystoreError(f"sealed prefix is {len(prefix)} bytes, {room} were reserved")
        out.seek(start)
        out.write(prefix)
        out.seek(end)
        return end - start

    def _write_attachments(self, out: BinaryIO, write: _Write, digests: list[str] | None) -> None:
        for index, source in enumerate(self.sources):
            out.write(record_header(KIND_ATTACHMENT, sealed_size(source.size, self.chunk_size)))
            digest = hashlib.sha256() if digests is not None else None
            with _open_source(source) as handle:
                seal_chunks(
                    handle,
                    source.size,
                    self.keys_for(write, index),
                    self.chunk_size,
                    index,
                    out.write,
                    digest,
                )
            if digest is not None and digests is not None:
                digests.append(digest.hexdigest())


@dataclass
class _Write:
    """The attachment key of one write of a container, and what it sealed with it."""

    akey: bytes
    digests: list[str] | None
    prefix: bytes | None = None


def _open_source(source: _Source) -> BinaryIO:
    try:
        raw = open(source.path, "rb", buffering=0)  # noqa: SIM115 (closed by the wrapper)
    except OSError as exc:
        raise KeystoreError(f"attachment {source.path} unreadable: {exc.strerror}") from exc
    return _AttachmentFile(raw, source.path)  # type: ignore[return-value]


class _AttachmentFile(io.RawIOBase):
    """An attachment's file whose read errors are :class:`KeystoreError` (the sealer's typed
    error) wherever they happen, in this thread or in a reader lane: a bare ``OSError`` would
    pass as the output's failure or escape the callers' ``KcbusError`` handling."""

    def __init__(self, raw: io.FileIO, path: Path) -> None:
        super().__init__()
        self._raw, self._path = raw, path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._raw.readinto(buffer) or 0
        except OSError as exc:
            raise KeystoreError(f"attachment {self._path} unreadable: {exc.strerror}") from exc

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass(frozen=True)
class SealedEnvelope:
    """A sealed envelope, ready to be written: ``data()`` for small ones, ``write_to`` /
    ``open()`` / ``save`` stream it (attachments are encrypted while it is written; ``save``
    reads each attachment once, hashing and encrypting it in the same pass)."""

    envelope_id: str
    sender: str
    recipient: str
    created: datetime
    signing_kid: str
    encryption_kid: str
    size: int
    via: str | None
    #: True when the envelope is one compact JWE (no attachments, no routing label).
    is_compact: bool
    _pieces: Callable[[], Iterator[Piece]]
    _container: _Container | None = None

    def __repr__(self) -> str:
        return (
            f"SealedEnvelope(envelope_id={self.envelope_id!r}, sender={self.sender!r}, "
            f"recipient={self.recipient!r}, size={self.size}, "
            f"attachments={0 if self._container is None else len(self._container.sources)}, "
            f"via={self.via!r})"
        )

    @property
    def manifest(self) -> tuple[ManifestEntry, ...]:
        """The signed attachment manifest. Hashes the attachments if the envelope has not
        been written yet."""
        if self._container is None:
            return ()
        if self._container.digests is None:
            self._container.digests = self._container.hash_sources()
        return tuple(self._container.manifest(self._container.digests))

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
        """Write the envelope to ``out`` in order; returns the number of bytes. Attachments
        are hashed first, then read, encrypted and written in a pipeline of threads."""
        if self._container is not None:
            return self._container.write_in_order(out)
        written = 0
        for piece in self._pieces():
            out.write(piece)
            written += len(piece)
        return written

    def open(self) -> BinaryIO:
        """A fresh stream of the envelope's bytes; each call encrypts anew from the files."""
        return io.BufferedReader(_PieceReader(self._pieces()), buffer_size=1 << 20)

    def save(self, path: Path) -> int:
        """Write to ``path`` atomically (temporary file, then rename), reading each attachment
        once."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as out:
                if self._container is not None and self._container.digests is None:
                    written = self._container.write_in_one_pass(out)
                else:
                    written = self.write_to(out)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written


def _sources(attachments: Sequence[Path | Attachment]) -> list[_Source]:
    sources: list[_Source] = []
    for item in attachments:
        spec = item if isinstance(item, Attachment) else Attachment(Path(item))
        name = spec.name or spec.path.name
        if not check_attachment_name(name):
            raise KeystoreError(f"attachment name {name[:80]!r} is not a safe file name")
        if any(s.name == name for s in sources):
            raise KeystoreError(f"two attachments named {name!r}")
        media_type = spec.media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            with open(spec.path, "rb") as handle:  # readable now, not only when written
                size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise KeystoreError(f"attachment {spec.path} unreadable: {exc.strerror}") from exc
        sources.append(_Source(name, media_type, size, spec.path))
    return sources


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
    sealed for ``recipient`` and the label for ``via``. Keys are picked now; attachments are
    read when the envelope is written (by ``save`` once, hashed and encrypted in one pass) and
    must not change before.
    """
    if (via is None) != (label is None):
        raise KeystoreError("end-to-end sealing needs both via (the bus) and a routing label")
    if not 1024 <= chunk_size <= 64 * 2**20:
        raise KeystoreError("chunk size must be between 1 KiB and 64 MiB")
    keystore.refresh()
    envelope_id = envelope_id or str(uuid.uuid4())
    iat = to_ts(now)
    sources = _sources(attachments)
    keys = _Keys.pick(keystore, sender, recipient, now)
    facts: JSON = {"v": 1, "id": envelope_id, "iat": iat, "from": sender, "to": recipient}
    if not sources and via is None:
        content = keys.seal("kcbus-message", media_type, facts, message, envelope_id)

        def compact() -> Iterator[Piece]:
            yield content

        return SealedEnvelope(
            envelope_id=envelope_id,
            sender=sender,
            recipient=recipient,
            created=from_ts(iat),
            signing_kid=keys.signer.kid,
            encryption_kid=keys.recipient.kid,
            size=len(content),
            via=None,
            is_compact=True,
            _pieces=compact,
        )
    container = _Container(
        keys=keys,
        label_keys=None if via is None else _Keys.pick(keystore, sender, via, now),
        label=label,
        via=via,
        message=message,
        media_type=media_type,
        facts=facts,
        sources=sources,
        chunk_size=chunk_size,
    )
    if not sources:
        container.prefix(container.begin_write())  # nothing to wait for: seal now
    return SealedEnvelope(
        envelope_id=envelope_id,
        sender=sender,
        recipient=recipient,
        created=from_ts(iat),
        signing_kid=keys.signer.kid,
        encryption_kid=keys.recipient.kid,
        size=container.size(),
        via=via,
        is_compact=False,
        _pieces=container.pieces,
        _container=container,
    )
