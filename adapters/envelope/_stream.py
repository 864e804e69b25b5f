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

Throughput: sealing reads, hashes, encrypts and writes every byte; opening reads, decrypts,
hashes and writes. :func:`seal_chunks` and :func:`decrypt_stream` run the four as a pipeline
over a small ring of chunk buffers: the AES-GCM step in the calling thread (cryptography keeps
the GIL for it), reading, hashing and writing in one helper thread each (they release the GIL
on large buffers), so on two cores the whole costs about half the sum of its parts. Every
chunk is still authenticated before its plaintext is written, and each stage sees the chunks
in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Final, TypeVar

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
    "seal_chunks",
    "sealed_size",
]

if TYPE_CHECKING:
    from hashlib import _Hash

Write = Callable[[memoryview], object]

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


#: Chunks travel the pipeline in groups of about this many bytes (one read, one hash update,
#: one write per group; AES-GCM still seals each chunk on its own), so thread hand-offs cost
#: little even for small chunks.
_GROUP_BYTES: Final = 4 << 20


@dataclass(frozen=True, slots=True)
class _Group:
    first: int  # index of its first chunk
    chunks: int
    plain: int  # plaintext bytes; the sealed group is plain + TAG * chunks


def _groups(size: int, chunk: int) -> list[_Group]:
    count = chunk_count(size, chunk)
    per = max(1, _GROUP_BYTES // chunk)
    return [
        _Group(j, min(per, count - j), min(per * chunk, size - j * chunk))
        for j in range(0, count, per)
    ]


def _ring_depth(group_bytes: int) -> int:
    """Groups in flight per ring: three keep every stage busy; fewer for the huge groups a
    signed chunk size of up to 64 MiB makes, so the two rings stay within ~128 MiB (a partner
    picks the chunk size: it must not pick our memory use)."""
    return max(1, min(3, _RING_BUDGET // max(group_bytes, 1)))


#: Bytes of one ring (plaintext or sealed) when groups are large.
_RING_BUDGET: Final = 48 << 20


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
    may write chunk j in a thread while chunk j+1 is encrypted. For streaming an envelope
    (``SealedEnvelope.open``); files are written with :func:`seal_chunks`."""
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


class _Lanes:
    """Three single-thread executors (read, hash, write): each runs its stage's tasks in
    submission order. On leaving, queued tasks are cancelled and running ones awaited, so no
    thread touches a buffer or file after the pipeline returns or raises."""

    def __enter__(self) -> _Lanes:
        self.read = ThreadPoolExecutor(1, thread_name_prefix="kcbus-read")
        self.hash = ThreadPoolExecutor(1, thread_name_prefix="kcbus-hash")
        self.write = ThreadPoolExecutor(1, thread_name_prefix="kcbus-write")
        return self

    def __exit__(self, *exc: object) -> None:
        lanes = (self.read, self.hash, self.write)
        for lane in lanes:
            lane.shutdown(wait=False, cancel_futures=True)
        for lane in lanes:
            lane.shutdown(wait=True)


_T = TypeVar("_T")


def _done(future: Future[_T] | None) -> None:
    if future is not None:
        future.result()


def seal_chunks(
    source: BinaryIO,
    size: int,
    key: bytes,
    chunk: int,
    index: int,
    write: Write,
    digest: _Hash | None = None,
) -> None:
    """Encrypt ``size`` bytes from ``source`` into sealed chunks passed to ``write`` in order,
    feeding the plaintext to ``digest`` too when given (one read pass for hash and
    encryption). Raises :class:`AttachmentChanged` if ``source`` does not hold ``size`` bytes.

    Per group g in ring slot s: read (reader lane) -> hash (hash lane) and encrypt chunk by
    chunk (here) of the same plaintext -> write of the sealed group (writer lane). Slot s is
    read into again only after its group is hashed and encrypted, and encrypted into again
    only after it is written."""
    aead = AESGCM(key)
    count = chunk_count(size, chunk)
    groups = _groups(size, chunk)
    biggest = groups[0]
    depth = min(_ring_depth(biggest.plain), len(groups))
    plains = [memoryview(bytearray(biggest.plain or 1)) for _ in range(depth)]
    sealeds = [memoryview(bytearray(biggest.plain + TAG * biggest.chunks)) for _ in range(depth)]
    reads: list[Future[int] | None] = [None] * depth
    hashes: list[Future[None] | None] = [None] * depth
    writes: list[Future[object] | None] = [None] * depth

    def read_after(hashed: Future[None] | None, view: memoryview) -> int:
        _done(hashed)  # the slot's previous plaintext is hashed (encrypted already: in order)
        return _fill(source, view)

    with _Lanes() as lanes:
        for g in range(depth):
            reads[g] = lanes.read.submit(read_after, None, plains[g][: groups[g].plain])
        for g, group in enumerate(groups):
            s = g % depth
            if reads[s].result() != group.plain:  # type: ignore[union-attr]
                raise AttachmentChanged(index)
            plain = plains[s][: group.plain]
            if digest is not None:
                hashes[s] = lanes.hash.submit(digest.update, plain)
            _done(writes[s])
            sealed = sealeds[s]
            for k in range(group.chunks):
                j = group.first + k
                lo = k * chunk
                n = min(chunk, group.plain - lo)
                out = sealed[lo + k * TAG : lo + k * TAG + n + TAG]
                aead.encrypt_into(_nonce(j, j == count - 1), plain[lo : lo + n], None, out)
            writes[s] = lanes.write.submit(write, sealed[: group.plain + TAG * group.chunks])
            if g + depth < len(groups):
                later = groups[g + depth]
                reads[s] = lanes.read.submit(read_after, hashes[s], plains[s][: later.plain])
        for s in range(depth):
            _done(hashes[s])
            _done(writes[s])
    if source.read(1):
        raise AttachmentChanged(index)


def decrypt_stream(
    source: BinaryIO,
    size: int,
    key: bytes,
    chunk: int,
    index: int,
    write: Write,
    *,
    envelope_id: str,
) -> str:
    """Read the sealed chunks of one attachment from ``source``, write the plaintext, return
    its SHA-256 (hex). Raises :class:`Truncated` or :class:`Tampered` naming the chunk.

    Per group g in ring slot s: read (reader lane, ahead) -> decrypt and authenticate chunk by
    chunk (here) -> hash and write of the same plaintext (their lanes, concurrently). Nothing
    is handed to ``write`` before every chunk of its group verified. ``source`` is read
    exactly up to the end of the attachment."""
    aead = AESGCM(key)
    count = chunk_count(size, chunk)
    groups = _groups(size, chunk)
    biggest = groups[0]
    depth = min(_ring_depth(biggest.plain), len(groups))
    sealeds = [memoryview(bytearray(biggest.plain + TAG * biggest.chunks)) for _ in range(depth)]
    plains = [memoryview(bytearray(biggest.plain or 1)) for _ in range(depth)]
    reads: list[Future[int] | None] = [None] * depth
    hashes: list[Future[None] | None] = [None] * depth
    writes: list[Future[object] | None] = [None] * depth
    digest = hashlib.sha256()

    def sealed_length(group: _Group) -> int:
        return group.plain + TAG * group.chunks

    with _Lanes() as lanes:
        for g in range(depth):
            reads[g] = lanes.read.submit(_fill, source, sealeds[g][: sealed_length(groups[g])])
        for g, group in enumerate(groups):
            s = g % depth
            got = reads[s].result()  # type: ignore[union-attr]
            _done(hashes[s])
            _done(writes[s])
            plain, sealed = plains[s], sealeds[s]
            for k in range(group.chunks):
                j = group.first + k
                lo = k * chunk
                n = min(chunk, group.plain - lo)
                if got < lo + k * TAG + n + TAG:
                    raise Truncated(
                        "attachment", envelope_id=envelope_id, attachment=index, chunk=j
                    )
                try:
                    aead.decrypt_into(
                        _nonce(j, j == count - 1),
                        sealed[lo + k * TAG : lo + k * TAG + n + TAG],
                        None,
                        plain[lo : lo + n],
                    )
                except InvalidTag:
                    raise Tampered(
                        "attachment", envelope_id=envelope_id, attachment=index, chunk=j
                    ) from None
            verified = plain[: group.plain]
            hashes[s] = lanes.hash.submit(digest.update, verified)
            writes[s] = lanes.write.submit(write, verified)
            if g + depth < len(groups):
                later = groups[g + depth]
                reads[s] = lanes.read.submit(_fill, source, sealeds[s][: sealed_length(later)])
        for s in range(depth):
            _done(hashes[s])
            _done(writes[s])
    return digest.hexdigest()
