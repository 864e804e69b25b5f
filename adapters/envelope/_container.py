"""The envelope container: one file or stream holding a sealed message, its routing label and its
attachments, so a transport moves any envelope as one opaque (possibly huge) file.

An envelope without attachments or label is *not* a container but one compact JWE (a ``.jwe``
file, RFC 7516 §7.1). Everything else is::

    container := MAGIC VERSION record* END
    MAGIC     := 89 4B 43 42 0D 0A 1A 0A          "\\x89KCB\\r\\n\\x1a\\n" (PNG-style: the high
                                                  byte, CR LF and ^Z detect text-mode damage)
    VERSION   := 01
    record    := KIND u64be(length) body[length]
    KIND      := 'L'  routing label: compact JWE for the bus (end-to-end mode; at most one, first)
               | 'C'  content: compact JWE for the recipient (exactly one)
               | 'A'  attachment i: its chunk stream (see _stream), one per manifest entry, in
                      manifest order
    END       := 'E' u64be(0)                     nothing may follow

Framing bytes are not authenticated themselves; they need not be: the label binds the SHA-256
of the content JWE, the content's signed manifest binds each attachment (size, chunk size,
digest, key), so any change to lengths, order or count fails a check that names the part.
A stream that ends before END is :class:`Truncated`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from adapters.envelope._errors import Malformed, Truncated

__all__ = [
    "END",
    "HEADER",
    "KIND_ATTACHMENT",
    "KIND_CONTENT",
    "KIND_END",
    "KIND_LABEL",
    "MAGIC",
    "MAX_TOKEN",
    "EnvelopeSource",
    "Reader",
    "as_stream",
    "record_header",
]

MAGIC: Final = b"\x89KCB\r\n\x1a\n"
VERSION: Final = 1
HEADER: Final = MAGIC + bytes([VERSION])
KIND_LABEL: Final = b"L"
KIND_CONTENT: Final = b"C"
KIND_ATTACHMENT: Final = b"A"
KIND_END: Final = b"E"
END: Final = KIND_END + bytes(8)
#: Largest compact JWE we read into memory (the message itself; big files are attachments).
MAX_TOKEN: Final = 512 * 2**20

EnvelopeSource = bytes | bytearray | memoryview | Path | BinaryIO


def record_header(kind: bytes, length: int) -> bytes:
    return kind + length.to_bytes(8, "big")


@contextlib.contextmanager
def as_stream(source: EnvelopeSource) -> Iterator[BinaryIO]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, Path):
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise FileNotFoundError(f"envelope {source} unreadable: {exc.strerror}") from exc
        with stream:
            yield stream
    else:
        yield source


def _read_exact(stream: BinaryIO, length: int, part: str) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise Truncated(part)
    return data


def _read_up_to(stream: BinaryIO, start: bytes, limit: int) -> bytes:
    """``start`` and what follows in ``stream``, at most ``limit`` bytes in all. In pieces:
    ``read(limit)`` on a buffered file allocates ``limit`` bytes (512 MiB) before reading."""
    data = bytearray(start)
    while len(data) < limit:
        piece = stream.read(min(1 << 20, limit - len(data)))
        if not piece:
            break
        data += piece
    return bytes(data)


class Reader:
    """Reads an envelope's parts from a stream; remembers the offset for forwarding."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        start = stream.read(len(HEADER))
        self.offset = len(start)
        self.compact: bytes | None = None
        if start[: len(MAGIC)] == MAGIC:
            if len(start) < len(HEADER):
                raise Truncated("container")
            if start[-1] != VERSION:
                raise Malformed("container", detail=f"unknown container version {start[-1]}")
        elif start[:2] == b"ey":  # base64url of '{"': a compact JWE
            token = _read_up_to(stream, start, MAX_TOKEN + 1).rstrip(b" \t\r\n")
            if len(token) > MAX_TOKEN:
                raise Malformed("jwe", detail="envelope too large to be a single JWE")
            self.compact = token
        elif not start:
            raise Truncated("container")
        else:
            raise Malformed("container", detail="neither a compact JWE nor a kcbus container")

    def next(self) -> tuple[bytes, int]:
        head = _read_exact(self.stream, 9, "container")
        self.offset += 9
        kind, length = head[:1], int.from_bytes(head[1:], "big")
        if kind not in (KIND_LABEL, KIND_CONTENT, KIND_ATTACHMENT, KIND_END):
            raise Malformed("container", detail="unknown record kind")
        if kind == KIND_END and length:
            raise Malformed("container", detail="bad end record")
        return kind, length

    def token(self, length: int, part: str) -> bytes:
        if length > MAX_TOKEN:
            raise Malformed(part, detail="part too large")
        data = _read_exact(self.stream, length, part)
        self.offset += length
        return data

    def skip(self, length: int, part: str) -> None:
        try:
            seekable = self.stream.seekable()
        except (AttributeError, ValueError):
            seekable = False
        if seekable:
            here = self.stream.tell()
            end = self.stream.seek(0, io.SEEK_END)
            if end - here < length:
                raise Truncated(part)
            self.stream.seek(here + length)
        else:
            left = length
            while left:
                block = self.stream.read(min(left, 1 << 20))
                if not block:
                    raise Truncated(part)
                left -= len(block)
        self.offset += length

    def expect_end(self) -> None:
        kind, _ = self.next()
        if kind != KIND_END:
            raise Malformed("container", detail="unexpected record")
        if self.stream.read(1):
            raise Malformed("container", detail="data after the end record")
