"""Hardened XML parsing: bytes in, an lxml tree out, or a typed rejection.

Invariants (each one a test in tests/xoev/test_parse.py):

* No DTD is ever processed: a document whose prolog holds a ``<!DOCTYPE`` is refused before
  libxml2 sees it, and the parser runs with ``load_dtd=False``, ``resolve_entities=False``,
  ``no_network=True`` as a second wall. This closes XXE (external entities to files or URLs),
  billion laughs and quadratic blow-up, which all need entity declarations (OWASP XXE
  prevention cheat sheet; XML 1.0 §4.2).
* The size limit is checked before parsing; depth and element-count limits right after, in C
  (an XPath over the tree), never by walking the tree in Python.
* The encoding is sniffed as XML 1.0 Appendix F describes (byte-order mark, then the first
  bytes, then the declaration); a declaration that contradicts the bytes, bytes that are not
  valid in the declared encoding, and encodings outside the allowed set are refused. XÖV
  messages are UTF-8 (XÖV-Handbuch, "Zeichenkodierung").
* Error texts carry sizes, limits, line and column numbers and libxml2 error type names only:
  never the rejected content (entity text, a path, an attribute value).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from lxml import etree

from xoev._errors import PartnerFault

__all__ = [
    "BadEncoding",
    "ForbiddenDtd",
    "Malformed",
    "ParseLimits",
    "TooDeep",
    "TooLarge",
    "TooManyElements",
    "XmlRejected",
    "parse_xml",
]


class XmlRejected(PartnerFault):
    """The bytes are not an acceptable XML document. Subclasses say why.

    ``line`` is the line of the offending construct where there is one (the DOCTYPE, the
    first too-deep element, the first invalid byte), else None.
    """

    reason_code: ClassVar[str] = "xml-rejected"
    line: int | None = None


class ForbiddenDtd(XmlRejected):
    """The document carries a DOCTYPE (DTD, entity declarations): never processed."""

    reason_code = "xml-dtd-forbidden"

    def __init__(self, line: int | None = None) -> None:
        self.line = line
        super().__init__("document type declarations (DTD, entities) are not accepted")


class TooLarge(XmlRejected):
    """The document exceeds the size limit; it was not parsed."""

    reason_code = "xml-too-large"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"document of {size} bytes exceeds the limit of {limit} bytes")


class TooDeep(XmlRejected):
    """Elements are nested deeper than the limit."""

    reason_code = "xml-too-deep"

    def __init__(self, limit: int, line: int | None = None) -> None:
        self.limit = limit
        self.line = line
        super().__init__(f"elements nested deeper than the limit of {limit}")


class TooManyElements(XmlRejected):
    """The document holds more elements than the limit."""

    reason_code = "xml-too-many-elements"

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(f"document has {count} elements, more than the limit of {limit}")


class Malformed(XmlRejected):
    """Not well-formed XML (truncated, mismatched tags, undefined entity, ...)."""

    reason_code = "xml-malformed"

    def __init__(self, line: int | None, column: int | None, error_type: str) -> None:
        self.line = line
        self.column = column
        #: libxml2's error type name, e.g. ``ERR_TAG_NAME_MISMATCH``: a category, no content.
        self.error_type = error_type
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"malformed XML{where} ({error_type})")


class BadEncoding(XmlRejected):
    """Wrong, unsupported or misdeclared character encoding."""

    reason_code = "xml-bad-encoding"

    def __init__(self, problem: str, *, declared: str | None = None,
                 detected: str | None = None, line: int | None = None) -> None:
        self.line = line
        self.problem = problem
        self.declared = declared
        self.detected = detected
        facts = [f"{k} {v}" for k, v in (("declared", declared), ("detected", detected)) if v]
        suffix = f" ({', '.join(facts)})" if facts else ""
        super().__init__(f"bad character encoding: {problem}{suffix}")


@dataclass(frozen=True)
class ParseLimits:
    """Limits applied to every document. The defaults suit XÖV messages and NeTEx tariffs."""

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 128
    max_elements: int = 2_000_000
    #: Canonical (lower-case) names of accepted encodings.
    encodings: frozenset[str] = frozenset(
        {"utf-8", "utf-16", "us-ascii", "iso-8859-1", "iso-8859-15"}
    )

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_elements <= 0:
            raise ValueError("limits must be positive")
        # libxml2 refuses anything deeper than 256 without XML_PARSE_HUGE, which we never set.
        if not 0 < self.max_depth <= 256:
            raise ValueError("max_depth must be within 1..256")


DEFAULT_LIMITS = ParseLimits()

# Encoding names as declared -> canonical name (XML 1.0 §4.3.3: names are case-insensitive).
_ALIASES = {
    "utf-8": "utf-8", "utf8": "utf-8",
    "utf-16": "utf-16", "utf-16le": "utf-16", "utf-16be": "utf-16", "ucs-2": "utf-16",
    "us-ascii": "us-ascii", "ascii": "us-ascii",
    "iso-8859-1": "iso-8859-1", "latin1": "iso-8859-1", "latin-1": "iso-8859-1",
    "iso_8859-1": "iso-8859-1", "iso-8859-15": "iso-8859-15", "latin-9": "iso-8859-15",
    "windows-1252": "windows-1252", "cp1252": "windows-1252",
    "utf-32": "utf-32", "ucs-4": "utf-32", "ebcdic": "ebcdic",
}
_DECL = re.compile(rb"""<\?xml\s[^?>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")


def _canonical(name: str) -> str:
    return _ALIASES.get(name.lower(), name.lower())


def _sniff(data: bytes) -> tuple[str, str | None, int]:
    """(detected family, declared encoding or None, BOM length), per XML 1.0 Appendix F."""
    if data.startswith(b"\xef\xbb\xbf"):
        detected, bom = "utf-8", 3
    elif data.startswith((b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")):
        detected, bom = "utf-32", 4
    elif data.startswith((b"\xfe\xff", b"\xff\xfe")):
        detected, bom = "utf-16", 2
    elif data.startswith((b"\x00<\x00?", b"<\x00?\x00")):
        detected, bom = "utf-16", 0
    elif data.startswith((b"\x00\x00\x00<", b"<\x00\x00\x00")):
        detected, bom = "utf-32", 0
    elif data.startswith(b"\x4c\x6f\xa7\x94"):
        detected, bom = "ebcdic", 0
    else:
        detected, bom = "ascii-compatible", 0
    head = data[bom : bom + 400]
    if detected == "utf-16":
        codec = "utf-16-be" if head[:1] == b"\x00" else "utf-16-le"
        if data.startswith(b"\xfe\xff"):
            codec = "utf-16-be"
        head = head.decode(codec, errors="replace").encode("ascii", errors="replace")
    match = _DECL.match(head.lstrip()) if head.lstrip().startswith(b"<?xml") else None
    declared = match.group(1).decode("ascii") if match else None
    if declared is None and head.startswith(b"<?xml") and b"encoding" in head.split(b"?>")[0]:
        raise BadEncoding("unreadable encoding declaration", detected=_family(detected))
    return detected, declared, bom


def _family(detected: str) -> str:
    return "ASCII-compatible" if detected == "ascii-compatible" else detected.upper()


def _check_encoding(data: bytes, limits: ParseLimits) -> str:
    """Return the canonical encoding, or raise BadEncoding."""
    detected, declared, bom = _sniff(data)
    # Only names of encodings we know are echoed: the declaration is the sender's text.
    shown = declared if declared is None or declared.lower() in _ALIASES else "(unknown name)"
    if detected in ("utf-32", "ebcdic"):
        raise BadEncoding("unsupported encoding", declared=shown, detected=_family(detected))
    if declared is None:
        # XML 1.0 §4.3.3: without a declaration and a BOM the document must be UTF-8 (or 16).
        encoding = "utf-16" if detected == "utf-16" else "utf-8"
    else:
        encoding = _canonical(declared)
        if encoding not in _ALIASES.values():
            raise BadEncoding("unknown encoding", declared=shown)
        if detected == "utf-16" and encoding != "utf-16":
            raise BadEncoding("declaration contradicts the bytes", declared=shown,
                              detected="UTF-16")
        if detected == "utf-8" and encoding != "utf-8":
            raise BadEncoding("declaration contradicts the byte-order mark", declared=shown,
                              detected="UTF-8")
        if detected == "ascii-compatible" and encoding == "utf-16":
            raise BadEncoding("declaration contradicts the bytes", declared=shown,
                              detected="ASCII-compatible")
    if encoding not in limits.encodings:
        raise BadEncoding("encoding not accepted", declared=shown or encoding.upper())
    if encoding in ("utf-8", "us-ascii"):
        try:
            data[bom:].decode("ascii" if encoding == "us-ascii" else "utf-8")
        except UnicodeDecodeError as exc:
            offset = exc.start + bom
            raise BadEncoding(
                "bytes are not valid " + encoding.upper(), declared=shown,
                detected=f"invalid byte at offset {offset}", line=data.count(b"\n", 0, offset) + 1,
            ) from None
    return encoding


def _refuse_doctype(data: bytes, encoding: str) -> None:
    """Scan the prolog (declaration, comments, PIs) and refuse a DOCTYPE before parsing."""
    if encoding == "utf-16":
        text = data[:65536].decode("utf-16", errors="replace").encode("utf-8", "replace")
    else:
        text = data
    pos = 3 if text.startswith(b"\xef\xbb\xbf") else 0
    size = len(text)
    while pos < size:
        while pos < size and text[pos] in b" \t\r\n":
            pos += 1
        if text.startswith(b"<?", pos):
            end = text.find(b"?>", pos)
            if end < 0:
                return  # truncated prolog: libxml2 reports it as malformed
            pos = end + 2
        elif text.startswith(b"<!--", pos):
            end = text.find(b"-->", pos)
            if end < 0:
                return
            pos = end + 3
        elif text.startswith(b"<!", pos):
            # <!DOCTYPE (in any letter case a lax parser might accept) or any other declaration
            raise ForbiddenDtd(text.count(b"\n", 0, pos) + 1)
        else:
            return


class _ThreadParser(threading.local):
    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            attribute_defaults=False,
            remove_blank_text=False,
            recover=False,
        )


_local = _ThreadParser()


@lru_cache(maxsize=16)
def _deeper_than(limit: int) -> etree.XPath:
    # The first element at depth limit+1, if any; libxml2 walks only existing levels.
    return etree.XPath("(/" + "*/" * limit + "*)[1]")


_COUNT = etree.XPath("count(//*)")
_ERROR_NAMES: dict[int, str] = {
    code: name for name, code in vars(etree.ErrorTypes).items()
    if name.isupper() and isinstance(code, int)
}


def parse_xml(data: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> etree._ElementTree:
    """Parse untrusted bytes into a tree, or raise an :class:`XmlRejected` subclass."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise TooLarge(len(data), limits.max_bytes)
    if not data.strip():
        raise Malformed(None, None, "ERR_DOCUMENT_EMPTY")
    encoding = _check_encoding(data, limits)
    _refuse_doctype(data, encoding)
    parser = _local.parser
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        # The exception carries this run's first fatal error (code, line, column); the
        # parser's error log would also hold older runs of this thread-local parser.
        type_name = _ERROR_NAMES.get(exc.code, "ERR_SYNTAX")  # type: ignore[attr-defined]
        line: int | None = exc.lineno or None
        column: int | None = exc.position[1] if exc.position else None
        if type_name in ("ERR_ENCODING_NAME", "ERR_UNSUPPORTED_ENCODING"):
            raise BadEncoding("libxml2 refused the encoding") from None
        if "DEPTH" in type_name or type_name == "ERR_RESOURCE_LIMIT":
            raise TooDeep(limits.max_depth, line) from None
        raise Malformed(line, column, type_name) from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise ForbiddenDtd()  # backstop: the prolog scan should have caught it
    # Cheap bounds first: every element needs at least one '<'.
    markup = data.count(b"<")
    if markup > limits.max_depth:
        too_deep = _deeper_than(limits.max_depth)(tree)
        if isinstance(too_deep, list) and too_deep:
            first = too_deep[0]
            raise TooDeep(limits.max_depth, getattr(first, "sourceline", None))
    if markup > limits.max_elements:
        count = int(_COUNT(tree))  # type: ignore[arg-type]
        if count > limits.max_elements:
            raise TooManyElements(count, limits.max_elements)
    return tree
