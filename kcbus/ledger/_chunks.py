"""Large blobs in chunks: written and read piece by piece, so memory stays constant.

A blob above :data:`INLINE_MAX` (a Bauantrag with building plans: hundreds of MB) keeps an
empty ``blobs.data`` and ``blobs.chunks`` = n; its content is n ``blob_chunks`` rows of
:data:`CHUNK` bytes (the last one 1..CHUNK bytes; an empty blob is one empty chunk). Smaller
blobs stay one row, exactly as before (the fast path does not change).

Invariants:
- Each chunk is AES-256-GCM on its own under the key the ``blobs`` row names (one key per
  blob, fresh random nonce per chunk), with associated data binding it to its blob and
  position: (salt, message, kind, delivery, index, final), where ``salt`` is 16 random bytes
  drawn for each blob written (``blobs.salt``, migration 0004). A chunk moved to another blob
  or another index fails to open, and so does one of an earlier blob at the same place (the
  place written again: a re-seal, a re-encryption) — its salt differs; so does a blob cut
  short (its new last chunk was not sealed as final) or one whose chunk count was changed
  (the final flag no longer matches).
- Blobs written before 0004 have no salt (NULL) and chunks bound by version 1 (the place and
  position only); they still open, and :func:`reencrypt_chunked` moves them to version 2.
- Blobs stored as sealed for their recipient (:data:`~kcbus.ledger._unit.AS_SEALED`) are
  chunked without the second layer (empty nonces, no salt), as their single-row form is; the
  reader still checks that every chunk is there and of the right length.
- A reader that has read every byte in order, from the first to the last (going back, or
  jumping ahead and coming back, on the way is fine), compares their SHA-256 with
  ``blobs.digest`` (the digest of the content as written) and raises
  :class:`~kcbus._errors.LedgerError` instead of handing out the last bytes if they differ;
  it refuses every read after that. For blobs stored as sealed that is the only check of their
  bytes; for encrypted ones it also covers blobs of version 1. It hashes as it reads: memory
  stays constant. A reader that never read some bytes has nothing to compare and checks
  nothing. (A whole earlier blob put back — every chunk, and the salt, size and digest of its
  row — cannot be told from the database alone.)
- Chunks are written in the unit's transaction as they come (nothing is held back beyond one
  chunk), so a crash before the commit leaves nothing behind, and they live in the database:
  the receive → commit → acknowledge invariant and PostgreSQL sharing hold as for small blobs.
- A reader fetches one chunk per query (by primary key), so it can be used between other
  statements of the same unit; it is seekable at the cost of one query per jump.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from kcbus._errors import LedgerError
from kcbus.ledger._content import ContentKeyring
from kcbus.ledger._tables import blob_chunks, blobs

__all__ = [
    "CHUNK",
    "INLINE_MAX",
    "SALT_BYTES",
    "BlobWriter",
    "ChunkedBlob",
    "StoredBlob",
    "chunk_associated_data",
    "delete_place",
    "open_chunked",
    "reencrypt_chunked",
]

#: Plaintext bytes per chunk row (the last one may hold fewer).
CHUNK = 1 << 20
#: Blobs up to this size are one ``blobs`` row; larger ones go into chunks.
INLINE_MAX = 8 << 20
#: Random bytes naming one written blob (``blobs.salt``): 128 bits, so two blobs never share
#: one by chance.
SALT_BYTES = 16

_AS_SEALED = "as-sealed"  # = kcbus.ledger._unit.AS_SEALED (that module imports this one)


def chunk_associated_data(
    message_id: int,
    kind: str,
    delivery_id: int,
    index: int,
    final: bool,
    salt: bytes | None = None,
) -> bytes:
    """What a chunk is bound to: version 2 names its blob's ``salt``; without one, version 1
    (blobs written before migration 0004)."""
    where = f"{message_id}:{kind}:{delivery_id}:{index}:{int(final)}"
    if salt is None:
        return f"kcbus-ledger-chunk/1:{where}".encode()
    return f"kcbus-ledger-chunk/2:{salt.hex()}:{where}".encode()


@dataclass(frozen=True)
class ChunkedBlob:
    """What the ``blobs`` row of a chunked blob says: enough to read or re-encrypt it."""

    blob_id: int
    place: tuple[int, str, int]  # (message, kind, delivery)
    key_id: str
    chunks: int
    size: int
    digest: str
    salt: bytes | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> ChunkedBlob:
        """From a row of ``select(blobs)``."""
        return cls(
            blob_id=int(row.id),
            place=(int(row.message_id), str(row.kind), int(row.delivery_id)),
            key_id=str(row.key_id),
            chunks=int(row.chunks),
            size=int(row.size),
            digest=str(row.digest),
            salt=None if row.salt is None else bytes(row.salt),
        )


@dataclass(frozen=True)
class StoredBlob:
    """A chunked blob of this unit: ``open()`` gives a fresh stream each time (a transport may
    re-read from the start). Valid only inside the unit (it reads through its connection)."""

    message_id: int
    kind: str
    delivery_id: int
    size: int
    digest: str
    _opener: Callable[[], BinaryIO] = field(repr=False, compare=False)

    def open(self) -> BinaryIO:
        return self._opener()

    def read(self) -> bytes:
        """The whole blob in memory: only for callers that need it whole (small readers)."""
        with self.open() as src:
            return src.read()


def delete_place(conn: Connection, message_id: int, kind: str, delivery_id: int) -> None:
    """Remove the blob at a place and its chunks (a re-seal that replaces a chunked blob)."""
    ids = select(blobs.c.id).where(
        blobs.c.message_id == message_id,
        blobs.c.kind == kind,
        blobs.c.delivery_id == delivery_id,
    )
    conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id.in_(ids)))
    conn.execute(
        delete(blobs).where(
            blobs.c.message_id == message_id,
            blobs.c.kind == kind,
            blobs.c.delivery_id == delivery_id,
        )
    )


class BlobWriter(io.RawIOBase):
    """A writable stream into the blob at (message, kind, delivery).

    Holds up to :data:`INLINE_MAX` bytes; a blob that ends there is handed to ``inline`` (one
    row, as :meth:`Unit.put_blob` stores it). Beyond that it inserts the ``blobs`` row (with a
    fresh salt if it encrypts) and writes chunks as they fill; :meth:`close` writes the final
    chunk and completes the row. :meth:`abort` removes what was written (the unit goes on
    without this blob).
    """

    def __init__(
        self,
        conn: Connection,
        keys: ContentKeyring,
        place: tuple[int, str, int],
        *,
        encrypt: bool,
        replace: bool,
        inline: Callable[[bytes, str], None],
    ) -> None:
        super().__init__()
        self._conn = conn
        self._keys = keys
        self._place = place
        self._encrypt = encrypt
        self._replace = replace
        self._inline = inline
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._blob_id: int | None = None
        self._key_id = keys.active if encrypt else _AS_SEALED
        self._salt: bytes | None = None
        self._seq = 0
        self._done = False
        self.digest = ""

    def writable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            raise ValueError("blob writer is closed")
        view = memoryview(data).cast("B")
        n = len(view)
        self._hash.update(view)
        self._size += n
        self._buffer += view
        if self._blob_id is None and len(self._buffer) > INLINE_MAX:
            self._start()
        if self._blob_id is not None:
            while len(self._buffer) > CHUNK:  # keep one back: the last chunk is sealed as final
                self._put(bytes(self._buffer[:CHUNK]), final=False)
                del self._buffer[:CHUNK]
        return n

    def _start(self) -> None:
        message_id, kind, delivery_id = self._place
        if self._replace:
            delete_place(self._conn, message_id, kind, delivery_id)
        # A fresh salt for every blob written, also when the place held one before: the
        # earlier blob's chunks name the earlier salt and do not open in this one.
        self._salt = secrets.token_bytes(SALT_BYTES) if self._encrypt else None
        row = {
            "message_id": message_id,
            "delivery_id": delivery_id,
            "kind": kind,
            "key_id": self._key_id,
            "nonce": b"",
            "data": b"",
            "size": 0,
            "digest": "",
            "chunks": 0,  # completed by close(); a crash rolls the whole unit back
            "salt": self._salt,
        }
        self._blob_id = int(
            self._conn.execute(insert(blobs).returning(blobs.c.id), [row]).scalar_one()
        )

    def _put(self, plain: bytes, *, final: bool) -> None:
        if self._encrypt:
            associated = chunk_associated_data(*self._place, self._seq, final, self._salt)
            sealed = self._keys.encrypt(plain, associated, key_id=self._key_id)
            nonce, stored = sealed.nonce, sealed.data
        else:
            nonce, stored = b"", plain
        self._conn.execute(
            insert(blob_chunks),
            [{"blob_id": self._blob_id, "seq": self._seq, "nonce": nonce, "data": stored}],
        )
        self._seq += 1

    def close(self) -> None:
        if self._done or self.closed:
            super().close()
            return
        self._done = True
        self.digest = self._hash.hexdigest()
        if self._blob_id is None:
            data, self._buffer = bytes(self._buffer), bytearray()
            self._inline(data, self.digest)
        else:
            self._put(bytes(self._buffer), final=True)
            self._buffer = bytearray()
            self._conn.execute(
                update(blobs)
                .where(blobs.c.id == self._blob_id)
                .values(size=self._size, digest=self.digest, chunks=self._seq)
            )
        super().close()

    def abort(self) -> None:
        """Drop what was written (the caller failed half way and carries on without it)."""
        self._done = True
        self._buffer = bytearray()
        if self._blob_id is not None:
            self._conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id == self._blob_id))
            self._conn.execute(delete(blobs).where(blobs.c.id == self._blob_id))
            self._blob_id = None
        super().close()

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class _ChunkReader(io.RawIOBase):
    """Reads a chunked blob, one chunk (one query) at a time; seekable. Checks the digest once
    it has read every byte in order (see the module docstring)."""

    def __init__(self, conn: Connection, keys: ContentKeyring, blob: ChunkedBlob) -> None:
        super().__init__()
        self._conn = conn
        self._keys = keys
        self._blob = blob
        self._size = blob.size
        self._pos = 0
        self._index = -1
        self._plain = b""
        # Bytes [0, _hashed) went into _hash, in order; each byte is hashed once, when a read
        # covers position _hashed (a read behind it or beyond it leaves the hash as it is).
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._checked = False
        self._tampered = False  # once found, every later read is refused too

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence})")
        base = bases[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._tampered:
            raise self._mismatch()
        if self._pos >= self._size:
            self._check_digest()
            return 0
        index, within = divmod(self._pos, CHUNK)
        if index != self._index:
            self._plain = self._load(index)
            self._index = index
        piece = memoryview(self._plain)[within : within + len(buffer)]
        n = len(piece)
        if self._pos <= self._hashed < self._pos + n:
            self._hash.update(piece[self._hashed - self._pos :])
            self._hashed = self._pos + n
            self._check_digest()  # at the end: before the last bytes are handed out
        memoryview(buffer).cast("B")[:n] = piece
        self._pos += n
        return n

    def _check_digest(self) -> None:
        if self._checked or self._hashed != self._size:
            return
        self._checked = True
        self._tampered = self._hash.hexdigest() != self._blob.digest
        if self._tampered:
            raise self._mismatch()

    def _mismatch(self) -> LedgerError:
        message_id, kind, _ = self._blob.place
        return LedgerError(
            f"ledger blob {kind} of message {message_id} does not match its digest (tampered)"
        )

    def _load(self, index: int) -> bytes:
        blob = self._blob
        message_id, kind, _ = blob.place
        row = self._conn.execute(
            select(blob_chunks.c.nonce, blob_chunks.c.data).where(
                blob_chunks.c.blob_id == blob.blob_id, blob_chunks.c.seq == index
            )
        ).first()
        if row is None:
            raise LedgerError(
                f"ledger blob {kind} of message {message_id} lacks chunk {index} (truncated)"
            )
        final = index == blob.chunks - 1
        if blob.key_id == _AS_SEALED:
            plain = bytes(row.data)
        else:
            associated = chunk_associated_data(*blob.place, index, final, blob.salt)
            plain = self._keys.decrypt(blob.key_id, row.nonce, row.data, associated)
        expected = CHUNK if not final else blob.size - CHUNK * (blob.chunks - 1)
        if len(plain) != expected:
            raise LedgerError(
                f"ledger blob {kind} of message {message_id}: chunk {index} has the wrong length"
            )
        return plain

    def close(self) -> None:
        self._plain = b""
        super().close()


def _reader(conn: Connection, keys: ContentKeyring, blob: ChunkedBlob) -> _ChunkReader:
    if blob.chunks < 1 or not CHUNK * (blob.chunks - 1) <= blob.size <= CHUNK * blob.chunks:
        message_id, kind, _ = blob.place
        raise LedgerError(
            f"ledger blob {kind} of message {message_id}: chunk count and size differ"
        )
    return _ChunkReader(conn, keys, blob)


def open_chunked(conn: Connection, keys: ContentKeyring, blob: ChunkedBlob) -> BinaryIO:
    """A buffered, seekable stream of a chunked blob's content (read through ``conn``)."""
    return cast(BinaryIO, io.BufferedReader(_reader(conn, keys, blob), buffer_size=CHUNK))


def reencrypt_chunked(conn: Connection, keys: ContentKeyring, blob: ChunkedBlob) -> None:
    """Move a chunked blob to the active key, chunk by chunk (one chunk in memory), under a
    fresh salt: a blob of version 1 leaves as version 2. The blob is read as any reader reads
    it (lengths, associated data, and the digest before its last chunk is written back), so a
    tampered blob is refused, not sealed anew; the caller's transaction then rolls back."""
    salt = secrets.token_bytes(SALT_BYTES)
    with _reader(conn, keys, blob) as src:
        for seq in range(blob.chunks):
            plain = src.read(CHUNK)  # one chunk: reads start at chunk boundaries
            associated = chunk_associated_data(*blob.place, seq, seq == blob.chunks - 1, salt)
            sealed = keys.encrypt(plain, associated)
            conn.execute(
                update(blob_chunks)
                .where(blob_chunks.c.blob_id == blob.blob_id, blob_chunks.c.seq == seq)
                .values(nonce=sealed.nonce, data=sealed.data)
            )
    conn.execute(
        update(blobs).where(blobs.c.id == blob.blob_id).values(key_id=keys.active, salt=salt)
    )
