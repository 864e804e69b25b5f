"""Attachment chunk streams: online authenticated encryption in constant memory.

The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption
and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as age and Tink's streaming AEAD use it,
with AES-256-GCM:

    key_i   = HKDF-SHA256(ikm = akey, salt = envelope ID, info = "kcbus attachment v1" || u32 i)
    nonce_j = u88 j || flag          (flag 0x01 on the last chunk, else 0x00)
    chunk_j = AES-256-GCM(key_i, nonce_j, plaintext[j*C : (j+1)*C], aad = "")

``akey`` is a random 256-bit key inside the sender's signed (and encrypted) JWS header; ``i``
is the attachment's position in the signed manifest, ``C`` its signed chunk size. So:

- a chunk moved to another position fails (``j`` is in the nonce);
- dropping the tail fails (the new last chunk lacks the flag; the signed size disagrees);
- a chunk from another attachment or another envelope fails (other key: ``i``, envelope ID
  and ``akey`` all enter it);
- the plaintext is also hashed (SHA-256) and compared with the signed digest, so the signature
  covers the content itself (non-repudiation), not only the key.

An attachment of ``size`` bytes becomes ``max(1, ceil(size / C))`` chunks of ``len + 16`` bytes
(an empty attachment is one empty final chunk). Buffers are allocated once per attachment and
reused (``encrypt_into``/``decrypt_into`` over ``memoryview``s): memory stays constant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adapters.envelope._errors import KeystoreError, Tampered, Truncated

__all__ = [
    "CHUNK_SIZE",
    "TAG",
    "AttachmentChanged",
    "attachment_key",
    "chunk_count",
    "decrypt_stream",
    "encrypt_stream",
    "sealed_size",
]

CHUNK_SIZE: Final = 1 << 20
TAG: Final = 16
_INFO: Final = b"kcbus attachment v1"


class AttachmentChanged(KeystoreError):
    """An attachment file changed size between sealing and writing the envelope."""

    def __init__(self, index: int) -> None:
        super().__init__(f"attachment {index} changed after it was sealed")
        self.index = index


def attachment_key(akey: bytes, envelope_id: str, index: int) -> bytes:
    info = _INFO + index.to_bytes(4, "big")
    return HKDF(hashes.SHA256(), 32, salt=envelope_id.encode(), info=info).derive(akey)


def chunk_count(size: int, chunk: int) -> int:
    return max(1, -(-size // chunk))


def sealed_size(size: int, chunk: int) -> int:
    return size + TAG * chunk_count(size, chunk)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _fill(source: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = source.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def encrypt_stream(
    source: BinaryIO, size: int, key: bytes, chunk: int, index: int
) -> Iterator[memoryview]:
    """Yield the sealed chunks of ``size`` bytes read from ``source``. Two output buffers take
    turns, so a yielded view stays valid until the one after the next is requested: a consumer
    may write chunk j in a thread while chunk j+1 is encrypted (see SealedEnvelope.write_to)."""
    aead = AESGCM(key)
    plain = memoryview(bytearray(min(chunk, size) or 1))
    sealed = [memoryview(bytearray(len(plain) + TAG)) for _ in range(2)]
    remaining = size
    count = chunk_count(size, chunk)
    for j in range(count):
        want = min(chunk, remaining)
        if _fill(source, plain[:want]) != want:
            raise AttachmentChanged(index)
        out = sealed[j % 2][: want + TAG]
        aead.encrypt_into(_nonce(j, j == count - 1), plain[:want], None, out)
        remaining -= want
        yield out
    if source.read(1):
        raise AttachmentChanged(index)


def decrypt_stream(
    source: BinaryIO,
    size: int,
    key: bytes,
    chunk: int,
    index: int,
    write: Callable[[memoryview], object],
    *,
    envelope_id: str,
) -> str:
    """Read the sealed chunks of one attachment from ``source``, write the plaintext, return
    its SHA-256 (hex). Raises :class:`Truncated` or :class:`Tampered` naming the chunk.

    Two stages overlap: reading + decrypting chunk j here, hashing + writing chunk j-1 in a
    helper thread (hashlib, AES-GCM and file writes all release the GIL on large buffers), with
    two plaintext buffers taking turns."""
    aead = AESGCM(key)
    sealed = memoryview(bytearray(min(chunk, size) + TAG))
    plains = [memoryview(bytearray(max(1, min(chunk, size)))) for _ in range(2)]
    digest = hashlib.sha256()
    remaining = size
    count = chunk_count(size, chunk)

    def consume(view: memoryview) -> None:
        digest.update(view)
        write(view)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kcbus-open") as helper:
        pending: Future[None] | None = None
        for j in range(count):
            want = min(chunk, remaining)
            if _fill(source, sealed[: want + TAG]) != want + TAG:
                raise Truncated("attachment", envelope_id=envelope_id, attachment=index, chunk=j)
            plain = plains[j % 2][:want]  # its previous user, chunk j-2, is consumed already
            try:
                aead.decrypt_into(_nonce(j, j == count - 1), sealed[: want + TAG], None, plain)
            except InvalidTag:
                raise Tampered(
                    "attachment", envelope_id=envelope_id, attachment=index, chunk=j
                ) from None
            if pending is not None:
                pending.result()
            pending = helper.submit(consume, plain)
            remaining -= want
        if pending is not None:
            pending.result()
    return digest.hexdigest()
