"""Values of the envelope layer: attachment manifest entries, routing labels, opened envelopes.

All frozen; their ``repr`` shows IDs, names, sizes and digests, never message content.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from adapters.envelope._errors import Malformed
from adapters.envelope._jose import JSON
from xoev import MessageHeader

__all__ = [
    "Attachment",
    "ManifestEntry",
    "OpenedAttachment",
    "OpenedEnvelope",
    "OpenedLabel",
    "RoutingLabel",
    "check_attachment_name",
]

_MEDIA_TYPE: Final = re.compile(r"[A-Za-z0-9][\w.+-]{0,63}/[A-Za-z0-9][\w.+-]{0,126}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


def check_attachment_name(name: str) -> bool:
    """A name that is safe as a file name in any output folder: no path, no control
    characters, no hidden or special names, at most 255 bytes UTF-8."""
    return (
        0 < len(name.encode()) <= 255
        and name not in (".", "..")
        and not name.startswith(".")
        and not any(c in "/\\" or unicodedata.category(c).startswith("C") for c in name)
    )


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment to seal: a file, the name the recipient sees, its media type."""

    path: Path
    name: str | None = None
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One attachment as the sender signed it."""

    name: str
    media_type: str
    size: int
    sha256: str  # hex
    chunk_size: int

    def to_json(self) -> JSON:
        return {"name": self.name, "type": self.media_type, "size": self.size,
                "sha256": self.sha256, "chunk": self.chunk_size}

    @classmethod
    def from_json(cls, value: object) -> ManifestEntry:
        if not isinstance(value, dict):
            raise Malformed("manifest")
        name, media_type = value.get("name"), value.get("type")
        size, digest, chunk = value.get("size"), value.get("sha256"), value.get("chunk")
        if not (
            isinstance(name, str) and check_attachment_name(name)
            and isinstance(media_type, str) and _MEDIA_TYPE.fullmatch(media_type)
            and type(size) is int and 0 <= size < 2**62
            and isinstance(digest, str) and _HEX64.fullmatch(digest)
            and type(chunk) is int and 1024 <= chunk <= 64 * 2**20
        ):
            raise Malformed("manifest", detail="bad attachment entry")
        return cls(name, media_type, size, digest, chunk)


@dataclass(frozen=True, slots=True)
class RoutingLabel:
    """The header facts the bus routes an end-to-end envelope by, without its content.

    Parties are addresses (``verzeichnisdienst:kennung``), never names."""

    message_id: str
    message_type: str | None = None
    standard: str | None = None
    version: str | None = None
    author: str | None = None
    readers: tuple[str, ...] = ()
    test: bool = False
    header_profile: str | None = None

    @classmethod
    def from_header(cls, header: MessageHeader) -> RoutingLabel:
        return cls(
            message_id=header.message_id,
            message_type=header.message_type,
            standard=header.standard,
            version=header.version,
            author=None if header.author is None else header.author.address,
            readers=tuple(p.address for p in header.readers),
            test=header.test,
            header_profile=header.profile,
        )

    def to_json(self) -> JSON:
        return {
            "message_id": self.message_id, "message_type": self.message_type,
            "standard": self.standard, "version": self.version, "author": self.author,
            "readers": list(self.readers), "test": self.test,
            "header_profile": self.header_profile,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> RoutingLabel:
        def text(name: str) -> str | None:
            item = value.get(name)
            if item is not None and not isinstance(item, str):
                raise Malformed("label", detail=f"bad {name}")
            return item

        readers = value.get("readers", [])
        message_id = text("message_id")
        if (
            not message_id
            or not isinstance(readers, list)
            or not all(isinstance(r, str) for r in readers)
            or not isinstance(value.get("test", False), bool)
        ):
            raise Malformed("label", detail="bad routing label")
        return cls(
            message_id=message_id,
            message_type=text("message_type"),
            standard=text("standard"),
            version=text("version"),
            author=text("author"),
            readers=tuple(str(r) for r in readers),
            test=bool(value.get("test", False)),
            header_profile=text("header_profile"),
        )


@dataclass(frozen=True, slots=True)
class OpenedAttachment:
    """An attachment written to disk after its size, every chunk and its digest checked."""

    entry: ManifestEntry
    path: Path


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """A verified envelope. ``message`` is hidden from ``repr`` (it may hold personal data)."""

    message: bytes = field(repr=False)
    media_type: str
    sender: str
    recipient: str
    envelope_id: str
    created: datetime
    signing_kid: str
    encryption_kid: str
    manifest: tuple[ManifestEntry, ...]
    attachments: tuple[OpenedAttachment, ...]

    @property
    def message_sha256(self) -> str:
        """SHA-256 (hex) of the message, computed when asked for."""
        return hashlib.sha256(self.message).hexdigest()


@dataclass(frozen=True, slots=True)
class OpenedLabel:
    """The routing label of an end-to-end envelope, opened and verified by the bus.

    ``recipient`` is the final recipient (the content is sealed for it, not for the bus)."""

    label: RoutingLabel
    sender: str
    recipient: str
    bus: str
    envelope_id: str
    created: datetime
    signing_kid: str
    encryption_kid: str
    content_sha256: str
    attachment_count: int
