"""The bus's pass-through in end-to-end mode: the content part of an envelope, label removed.

The bus cannot read the content (it is sealed for the final recipient), so it forwards it
byte for byte: the content JWE alone if there are no attachments, else a container of the
content record and the attachment records copied unchanged. The final recipient verifies
everything (:func:`~adapters.envelope.open_envelope`); the bus has checked that the content is
the one its verified label names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from adapters.envelope._container import (
    HEADER,
    KIND_CONTENT,
    KIND_END,
    KIND_LABEL,
    Reader,
    as_stream,
    record_header,
)
from adapters.envelope._errors import Malformed, Tampered
from adapters.envelope._jose import parse_jwe
from adapters.envelope._model import OpenedLabel
from adapters.envelope._seal import Piece, SealedEnvelope

__all__ = ["forward_content"]


def forward_content(source: bytes | Path | BinaryIO, label: OpenedLabel) -> SealedEnvelope:
    """The content of ``source`` for its final recipient; ``label`` is what
    :func:`~adapters.envelope.open_label` returned for the same envelope.

    A stream must be seekable and stay open while the result is written: the attachment
    records are read from it then, from their offset (nothing is copied ahead)."""
    with as_stream(source) as stream:
        reader = Reader(stream)
        if reader.compact is not None:
            raise Malformed("label", detail="the envelope has no routing label")
        kind, length = reader.next()
        if kind != KIND_LABEL:
            raise Malformed("label", detail="the envelope has no routing label")
        reader.skip(length, "label")
        kind, length = reader.next()
        if kind != KIND_CONTENT:
            raise Malformed("container", detail="no content record")
        content = reader.token(length, "jwe")
        rest = reader.offset
        kind, _ = reader.next()
        only_content = kind == KIND_END
        total = stream.seek(0, 2) if not isinstance(source, bytes) else len(source)
    if hashlib.sha256(content).hexdigest() != label.content_sha256:
        raise Tampered("label", envelope_id=label.envelope_id, detail="content does not match")
    kid = parse_jwe(content).kid or ""

    if only_content:

        def pieces() -> Iterator[Piece]:
            yield content

        size = len(content)
    else:
        prefix = HEADER + record_header(KIND_CONTENT, len(content)) + content
        size = len(prefix) + total - rest

        def pieces() -> Iterator[Piece]:
            yield prefix
            if isinstance(source, bytes):
                yield memoryview(source)[rest:]
                return
            with as_stream(source) as stream:
                stream.seek(rest)
                left = total - rest
                while left > 0:
                    block = stream.read(min(1 << 20, left))
                    if not block:
                        raise Malformed("container", detail="the envelope ended early")
                    left -= len(block)
                    yield block

    return SealedEnvelope(
        envelope_id=label.envelope_id,
        sender=label.sender,
        recipient=label.recipient,
        created=label.created,
        signing_kid=label.signing_kid,
        encryption_kid=kid,
        size=size,
        via=None,
        is_compact=only_content,
        _pieces=pieces,
    )
