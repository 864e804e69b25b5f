"""xoev — sans-IO XÖV message model: bytes in, typed values out.

No network, no Airflow, no kombu, no clocks (time comes in as a parameter). The public face:

* :func:`parse_xml` — hardened parsing (no DTD, no entities, no network, size/depth limits);
  rejections are :class:`XmlRejected` subclasses.
* :func:`read_header` — the routing facts of any supported family as one
  :class:`MessageHeader` (profiles: XÖV ``nachrichtenkopf.g2g`` 1.1 qualified/unqualified,
  XJustiz GDS, HL7 CDA R2, NeTEx ``PublicationDelivery``, xdomea ``Kopf``).
* :class:`SchemaRegistry` — schema packages on disk, offline resolution, cached compiles,
  validation with line, XPath and message per error.
* :class:`CodeLists` — OASIS genericode code lists and the XÖV code-list check.

Every error derives from :class:`KcbusError` (see ``xoev/_errors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from xoev._codelists import (
    CodeIssue,
    CodeList,
    CodeListReport,
    CodeLists,
    CodeListUnreadable,
)
from xoev._errors import ConfigurationError, KcbusError, PartnerFault, TransientFault
from xoev._header import BadHeader, HeaderProfile, MessageHeader, Party, UnknownDocument
from xoev._header import read_header_with as _read_header_with
from xoev._index import SchemaFileUnreadable
from xoev._parse import (
    BadEncoding,
    ForbiddenDtd,
    Malformed,
    ParseLimits,
    TooDeep,
    TooLarge,
    TooManyElements,
    XmlRejected,
    parse_xml,
)
from xoev._profiles import DEFAULT_PROFILES
from xoev._schemas import (
    CompileReport,
    NamespaceInfo,
    NoSchema,
    PackageInfo,
    SchemaCompileError,
    SchemaRegistry,
    ValidationIssue,
    ValidationResult,
    redact,
    redact_values,
)

__all__ = [
    "DEFAULT_PROFILES",
    "BadEncoding",
    "BadHeader",
    "CodeIssue",
    "CodeList",
    "CodeListReport",
    "CodeListUnreadable",
    "CodeLists",
    "CompileReport",
    "ConfigurationError",
    "ForbiddenDtd",
    "HeaderProfile",
    "KcbusError",
    "Malformed",
    "MessageHeader",
    "NamespaceInfo",
    "NoSchema",
    "PackageInfo",
    "ParseLimits",
    "PartnerFault",
    "Party",
    "SchemaCompileError",
    "SchemaFileUnreadable",
    "SchemaRegistry",
    "TooDeep",
    "TooLarge",
    "TooManyElements",
    "TransientFault",
    "UnknownDocument",
    "ValidationIssue",
    "ValidationResult",
    "XmlRejected",
    "parse_xml",
    "read_header",
    "redact",
    "redact_values",
]


def read_header(
    tree: etree._ElementTree | etree._Element,
    *,
    profiles: Sequence[HeaderProfile] = DEFAULT_PROFILES,
) -> MessageHeader:
    """Read the routing facts with the first matching profile, or raise UnknownDocument."""
    return _read_header_with(tree, profiles)
