"""One header model for every message family, read by small profile modules.

A *header profile* knows one family's envelope of routing facts (XÖV ``nachrichtenkopf.g2g``,
XJustiz ``Type.GDS.Nachrichtenkopf``, HL7 CDA R2 header, NeTEx ``PublicationDelivery``, xdomea
``Kopf``) and turns it into one :class:`MessageHeader`. Profiles live in ``xoev/_profiles/``, one
module each; adding a family means adding one module and listing its profile in
``DEFAULT_PROFILES``.

Invariants:

* A header holds routing facts only. Where a family puts personal data into its header (the
  patient of a CDA document), the model keeps an identifier reference (``subject_ref``), never
  a name; ``repr()`` of a header or party shows neither names nor the subject reference, so a
  header can be logged.
* The first profile whose ``matches`` accepts the root element reads the header; if none does,
  :class:`UnknownDocument` names the root element and its namespace.
* Reading a header never validates the document: call the schema registry for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

from lxml import etree

from xoev._errors import PartnerFault

__all__ = [
    "BadHeader",
    "HeaderProfile",
    "MessageHeader",
    "Party",
    "UnknownDocument",
    "root_qname",
]

_MAX_SHOWN = 200  # names of elements/namespaces in error texts are cut to this length


class UnknownDocument(PartnerFault):
    """No header profile knows this document's root element."""

    reason_code: ClassVar[str] = "unknown-document"

    def __init__(self, root: str, namespace: str | None) -> None:
        self.root = root[:_MAX_SHOWN]
        self.namespace = namespace[:_MAX_SHOWN] if namespace else None
        ns = f"namespace {self.namespace}" if self.namespace else "no namespace"
        super().__init__(f"unknown document: root element {self.root!r} in {ns}")


class BadHeader(PartnerFault):
    """A profile matched, but a header field it needs is missing or malformed."""

    reason_code: ClassVar[str] = "bad-header"

    def __init__(self, profile: str, path: str, problem: str) -> None:
        self.profile = profile
        self.path = path
        self.problem = problem
        super().__init__(f"{profile} header: {path}: {problem}")


@dataclass(frozen=True)
class Party:
    """An addressable participant: directory (``verzeichnisdienst``) plus ID (``kennung``).

    XÖV: ``BehoerdeType`` (``verzeichnisdienst`` code, ``kennung``, ``name``). Other families
    map their sender/recipient identifiers onto the same two fields (see each profile).
    """

    verzeichnisdienst: str | None
    kennung: str
    name: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.kennung:
            raise ValueError("a party needs a kennung")

    @property
    def address(self) -> str:
        """``verzeichnisdienst:kennung`` (or just the kennung): the routing key of a party."""
        if self.verzeichnisdienst:
            return f"{self.verzeichnisdienst}:{self.kennung}"
        return self.kennung


@dataclass(frozen=True)
class MessageHeader:
    """The routing facts of one message, whatever its family."""

    #: Message ID: XÖV ``nachrichtenUUID``, XJustiz ``eigeneNachrichtenID``, CDA ``id``,
    #: xdomea ``ProzessID``, NeTEx ``ParticipantRef/PublicationTimestamp``.
    message_id: str
    #: Message type, e.g. ``baugenehmigung.antrag.0200`` (XÖV: ``<process>.<message>.<number>``).
    message_type: str | None
    created: datetime | None
    author: Party | None
    readers: tuple[Party, ...]
    standard: str | None
    version: str | None
    #: XÖV ``test="true"``: must never reach a production recipient.
    test: bool
    #: Name of the profile that read the header.
    profile: str
    #: Root element in Clark notation, ``{namespace}local``.
    root: str
    #: The process/series the message belongs to (XJustiz/xdomea ``ProzessID``, CDA ``setId``).
    process_id: str | None = None
    #: Revision of a versioned document (CDA ``versionNumber``).
    revision: str | None = None
    #: Custodian of the document (CDA ``custodian``).
    custodian: Party | None = None
    #: Identifier reference of the person the document is about (CDA ``recordTarget``);
    #: never a name. Hidden from ``repr`` so headers can be logged.
    subject_ref: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.message_id:
            raise ValueError("a message header needs a message_id")
        if not isinstance(self.readers, tuple):
            object.__setattr__(self, "readers", tuple(self.readers))

    @property
    def namespace(self) -> str | None:
        return etree.QName(self.root).namespace

    @property
    def local_name(self) -> str:
        return etree.QName(self.root).localname


class HeaderProfile(Protocol):
    """Reads one family's header. ``matches`` must be cheap: it runs for every message."""

    name: str

    def matches(self, root: etree._Element) -> bool: ...

    def read(self, root: etree._Element) -> MessageHeader: ...


def root_qname(root: etree._Element) -> tuple[str, str | None]:
    """(local name, namespace) of an element."""
    qname = etree.QName(root)
    return qname.localname, qname.namespace


def read_header_with(
    tree: etree._ElementTree | etree._Element, profiles: Sequence[HeaderProfile]
) -> MessageHeader:
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    for profile in profiles:
        if profile.matches(root):
            return profile.read(root)
    local, namespace = root_qname(root)
    raise UnknownDocument(local, namespace)
