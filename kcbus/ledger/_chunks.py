"""Large blobs in chunks: written and read piece by piece, so memory stays constant.

A blob above :data:`INLINE_MAX` (a Bauantrag with building plans: hundreds of MB) keeps an
empty ``blobs.data`` and ``blobs.chunks`` = n; its content is n ``blob_chunks`` rows of
:data:`CHUNK` bytes (the last one 1..CHUNK bytes; an empty blob is one empty chunk). Smaller
blobs stay one row, exactly as before (the fast path does not change).

Invariants:
- Each chunk is AES-256-GCM on its own under the key the ``blobs`` row names (one key per
  blob, fresh random nonce per chunk), with associated data binding it to its place and
  position: (message, kind, delivery, index, final). A chunk moved to another blob or another
  index fails to open; so does a blob cut short (its new last chunk was not sealed as final)
  or one whose chunk count was changed (the final flag no longer matches).
- Blobs stored as sealed for their recipient (:data:`~kcbus.ledger._unit.AS_SEALED`) are
  chunked without the second layer (empty nonces), as their single-row form is; the reader
  still checks that every chunk is there and of the right length.
- Chunks are written in the unit's transaction as they come (nothing is held back beyond one
  chunk), so a crash before the commit leaves nothing behind, and they live in the database:
  the receive → commit → acknowledge invariant and PostgreSQL sharing hold as for small blobs.
- A reader fetches one chunk per query (by primary key), so it can be used between other
  statements of the same unit; it is seekable at the cost of one query per jump.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from kcbus._errors import LedgerError
from kcbus.ledger._content import ContentKeyring
from kcbus.ledger._tables import blob_chunks, blobs

__all__ = [
    "CHUNK",
    "INLINE_MAX",
    "BlobWriter",
    "StoredBlob",
    "chunk_associated_data",
    "delete_place",
    "open_chunked",
]

#: Plaintext bytes per chunk row (the last one may hold fewer).
CHUNK = 1 << 20
#: Blobs up to this size are one ``blobs`` row; larger ones go into chunks.
INLINE_MAX = 8 << 20

_AS_SEALED = "as-sealed"  # = kcbus.ledger._unit.AS_SEALED (that module imports this one)


def chunk_associated_data(
    message_id: int, kind: str, delivery_id: int, index: int, final: bool
) -> bytes:
    return f"kcbus-ledger-chunk/1:{message_id}:{kind}:{delivery_id}:{index}:{int(final)}".encode()


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
    row, as :meth:`Unit.put_blob` stores it). Beyond that it inserts the ``blobs`` row and
    writes chunks as they fill; :meth:`close` writes the final chunk and completes the row.
    :meth:`abort` removes what was written (the unit goes on without this blob).
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
        }
        self._blob_id = int(
            self._conn.execute(insert(blobs).returning(blobs.c.id), [row]).scalar_one()
        )

    def _put(self, plain: bytes, *, final: bool) -> None:
        message_id, kind, delivery_id = self._place
        if self._encrypt:
            associated = chunk_associated_data(message_id, kind, delivery_id, self._seq, final)
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
    """Reads a chunked blob, one chunk (one query) at a time; seekable."""

    def __init__(
        self,
        conn: Connection,
        keys: ContentKeyring,
        *,
        blob_id: int,
        place: tuple[int, str, int],
        key_id: str,
        chunks: int,
        size: int,
    ) -> None:
        super().__init__()
        self._conn = conn
        self._keys = keys
        self._blob_id = blob_id
        self._place = place
        self._key_id = key_id
        self._chunks = chunks
        self._size = size
        self._pos = 0
        self._index = -1
        self._plain = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._size:
            return 0
        index, within = divmod(self._pos, CHUNK)
        if index != self._index:
            self._plain = self._load(index)
            self._index = index
        piece = memoryview(self._plain)[within : within + len(buffer)]
        n = len(piece)
        memoryview(buffer).cast("B")[:n] = piece
        self._pos += n
        return n

    def _load(self, index: int) -> bytes:
        message_id, kind, delivery_id = self._place
        row = self._conn.execute(
            select(blob_chunks.c.nonce, blob_chunks.c.data).where(
                blob_chunks.c.blob_id == self._blob_id, blob_chunks.c.seq == index
            )
        ).first()
        if row is None:
            raise LedgerError(
                f"ledger blob {kind} of message {message_id} lacks chunk {index} (truncated)"
            )
        final = index == self._chunks - 1
        if self._key_id == _AS_SEALED:
            plain = bytes(row.data)
        else:
            associated = chunk_associated_data(message_id, kind, delivery_id, index, final)
            plain = self._keys.decrypt(self._key_id, row.nonce, row.data, associated)
        expected = CHUNK if not final else self._size - CHUNK * (self._chunks - 1)
        if len(plain) != expected:
            raise LedgerError(
                f"ledger blob {kind} of message {message_id}: chunk {index} has the wrong length"
            )
        return plain

    def close(self) -> None:
        self._plain = b""
        super().close()


def open_chunked(
    conn: Connection,
    keys: ContentKeyring,
    *,
    blob_id: int,
    place: tuple[int, str, int],
    key_id: str,
    chunks: int,
    size: int,
) -> BinaryIO:
    if chunks < 1 or not CHUNK * (chunks - 1) <= size <= CHUNK * chunks:
        message_id, kind, _ = place
        raise LedgerError(
            f"ledger blob {kind} of message {message_id}: chunk count and size differ"
        )
    raw = _ChunkReader(
        conn, keys, blob_id=blob_id, place=place, key_id=key_id, chunks=chunks, size=size
    )
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=CHUNK))
