"""Build kcbus receipts (``kcbus-quittung`` 1.0) and read them back.

Three message types, each a complete XÖV-style message with ``nachrichtenkopf.g2g``:
``quittung.eingang.0110`` (Eingangsbestätigung: accepted), ``quittung.rueckweisung.0120``
(Rückweisung: rejected, reason code + text + XPath + line per fault) and
``quittung.zustellung.0130`` (Zustellbestätigung: delivered to every recipient). Each references
the original message by its UUID (or, if the envelope could not be opened, its envelope ID).

Invariant: :meth:`ReceiptBuilder.build` validates every receipt against
``kcbus/receipts/schemas/kcbus-quittung-1.0.xsd`` before returning it; one that does not validate is
a bug in kcbus and raises :class:`~kcbus._errors.ReceiptInvalid` instead of leaving.
A receipt is about the partner's own message, so a Rückweisung may say which element failed;
texts are kcbus's own and never copy content values (see :func:`redact`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache

from lxml import etree

import xoev
from kcbus._errors import ReceiptInvalid
from kcbus.receipts._codes import MESSAGE_TYPE_LIST, REASON_LIST, SCHEMA_DIR, sendable_reason

__all__ = [
    "NAMESPACE",
    "STANDARD",
    "VERSION",
    "Addressee",
    "Fault",
    "Handover",
    "Receipt",
    "ReceiptBuilder",
    "ReceiptType",
    "Reference",
    "read_receipt",
    "redact",
]

NAMESPACE = "urn:kcbus:schemata:quittung:1_0"
STANDARD = "kcbus-quittung"
VERSION = "1.0"
_SCHEMA_FILE = SCHEMA_DIR / "kcbus-quittung-1.0.xsd"
#: XÖV basisnachricht: code list of directory services, listVersionID sent in the message.
VERZEICHNISDIENST_LIST = ("urn:xoev-de:kosit:codeliste:verzeichnisdienst", "2")


class ReceiptType(StrEnum):
    """The receipt's kind; the value is its XÖV message type name."""

    ACCEPTED = "quittung.eingang.0110"
    REJECTED = "quittung.rueckweisung.0120"
    DELIVERED = "quittung.zustellung.0130"

    @property
    def code(self) -> str:
        return self.value.rsplit(".", 1)[1]

    @property
    def kind(self) -> str:
        """``accepted`` / ``rejected`` / ``delivered`` (as in the partner config)."""
        return {"0110": "accepted", "0120": "rejected", "0130": "delivered"}[self.code]


@dataclass(frozen=True)
class Addressee:
    """``leser``/``autor``: an XÖV address and a display name (an office, not a person)."""

    verzeichnisdienst: str
    kennung: str
    name: str


@dataclass(frozen=True)
class Reference:
    """The original message a receipt answers."""

    received_at: datetime
    message_uuid: str | None = None
    envelope_id: str | None = None
    message_type: str | None = None


@dataclass(frozen=True)
class Fault:
    """One reason for a Rückweisung."""

    reason_code: str
    text: str
    xpath: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Handover:
    """One completed delivery, for a Zustellbestätigung."""

    recipient: str
    at: datetime
    envelope_id: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A receipt as read back (by a partner, or a test)."""

    type: ReceiptType
    uuid: str
    created: datetime
    test: bool
    reader: Addressee
    author: Addressee
    reference: Reference
    faults: tuple[Fault, ...] = ()
    handovers: tuple[Handover, ...] = ()
    route: str | None = None
    inspection: str | None = None


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(_SCHEMA_FILE)))


def _ts(value: datetime) -> str:
    # XÖV: erstellungszeitpunkt with milliseconds and a time zone.
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def redact(text: str) -> str:
    """Drop quoted values from validator and error messages, keeping quoted element/attribute
    names.

    libxml2 writes e.g. ``Element 'kennung': [facet 'pattern'] The value 'Max M.' is not
    accepted``; the value may be personal data and has no place in logs, the ledger or the UI.
    One rule for the whole bus: :func:`xoev.redact_values`.
    """
    return xoev.redact_values(text)


class ReceiptBuilder:
    """Writes receipts on behalf of the bus (``autor``), one per call."""

    def __init__(
        self, author: Addressee, *, product: str, vendor: str, product_version: str
    ) -> None:
        self.author = author
        self.product = product
        self.vendor = vendor
        self.product_version = product_version

    def build(
        self,
        receipt_type: ReceiptType,
        *,
        receipt_uuid: str,
        now: datetime,
        reader: Addressee,
        reference: Reference,
        test: bool = False,
        faults: Sequence[Fault] = (),
        handovers: Sequence[Handover] = (),
        route: str | None = None,
        inspection: str | None = None,
    ) -> bytes:
        root = etree.Element(f"{{{NAMESPACE}}}{receipt_type.value}", nsmap={"kq": NAMESPACE})
        root.set("produkt", self.product)
        root.set("produkthersteller", self.vendor)
        root.set("produktversion", self.product_version)
        root.set("standard", STANDARD)
        root.set("version", VERSION)
        if test:
            root.set("test", "true")
        head = etree.SubElement(root, "nachrichtenkopf.g2g")
        ident = etree.SubElement(head, "identifikation.nachricht")
        etree.SubElement(ident, "nachrichtenUUID").text = receipt_uuid
        typ = etree.SubElement(ident, "nachrichtentyp")
        typ.set("listURI", MESSAGE_TYPE_LIST[0])
        typ.set("listVersionID", MESSAGE_TYPE_LIST[1])
        etree.SubElement(typ, "code").text = receipt_type.code
        etree.SubElement(typ, "name").text = receipt_type.value
        etree.SubElement(ident, "erstellungszeitpunkt").text = _ts(now)
        _party(etree.SubElement(head, "leser"), reader)
        _party(etree.SubElement(head, "autor"), self.author)

        ref = etree.SubElement(root, "bezug")
        if reference.message_uuid and _UUID.fullmatch(reference.message_uuid):
            etree.SubElement(ref, "nachrichtenUUID").text = reference.message_uuid
        elif reference.message_uuid:
            etree.SubElement(ref, "nachrichtenID").text = _one_line(reference.message_uuid)
        if reference.envelope_id:
            etree.SubElement(ref, "umschlagID").text = reference.envelope_id
        if reference.message_type:
            etree.SubElement(ref, "nachrichtentyp").text = reference.message_type
        etree.SubElement(ref, "eingangszeitpunkt").text = _ts(reference.received_at)

        if receipt_type is ReceiptType.ACCEPTED:
            accepted = etree.SubElement(root, "eingang")
            etree.SubElement(accepted, "fluss").text = route or "-"
            etree.SubElement(accepted, "pruefung").text = (
                "ende-zu-ende" if inspection == "end-to-end" else "vollstaendig"
            )
        elif receipt_type is ReceiptType.REJECTED:
            if not faults:
                raise ValueError("a Rückweisung needs at least one fault")
            for fault in faults:
                item = etree.SubElement(root, "fehler")
                grund = etree.SubElement(item, "grund")
                grund.set("listURI", REASON_LIST[0])
                grund.set("listVersionID", REASON_LIST[1])
                code = sendable_reason(fault.reason_code)
                etree.SubElement(grund, "code").text = code
                text = redact(fault.text) or code
                if code != fault.reason_code:
                    text = f"[{fault.reason_code}] {text}"
                etree.SubElement(item, "text").text = _one_line(text)
                if fault.xpath:
                    etree.SubElement(item, "xpath").text = _one_line(fault.xpath)
                if fault.line is not None and fault.line > 0:
                    etree.SubElement(item, "zeile").text = str(fault.line)
        else:
            if not handovers:
                raise ValueError("a Zustellbestätigung needs at least one delivery")
            for handover in handovers:
                item = etree.SubElement(root, "zustellung")
                etree.SubElement(item, "empfaenger").text = handover.recipient
                etree.SubElement(item, "zustellzeitpunkt").text = _ts(handover.at)
                if handover.envelope_id:
                    etree.SubElement(item, "umschlagID").text = handover.envelope_id

        schema = _schema()
        if not schema.validate(root):
            error = schema.error_log[0]  # type: ignore[index]  # lxml-stubs lack __getitem__
            raise ReceiptInvalid(
                receipt_type.value, error.line, error.path or "", redact(error.message)
            )
        data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return data


def _one_line(text: str, limit: int = 2000) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _party(element: etree._Element, who: Addressee) -> None:
    vd = etree.SubElement(element, "verzeichnisdienst")
    vd.set("listVersionID", VERZEICHNISDIENST_LIST[1])
    etree.SubElement(vd, "code").text = who.verzeichnisdienst
    etree.SubElement(element, "kennung").text = who.kennung
    etree.SubElement(element, "name").text = who.name


def _read_party(element: etree._Element | None) -> Addressee:
    if element is None:
        raise ValueError("receipt lacks leser/autor")
    return Addressee(
        verzeichnisdienst=element.findtext("verzeichnisdienst/code") or "",
        kennung=element.findtext("kennung") or "",
        name=element.findtext("name") or "",
    )


def _dt(text: str | None) -> datetime:
    return datetime.fromisoformat((text or "").replace("Z", "+00:00"))


def read_receipt(data: bytes) -> Receipt:
    """Parse and validate a kcbus receipt (as a partner would); ``ValueError`` if it is none."""
    try:  # the hardened parser: a receipt comes from outside like any message
        root = xoev.parse_xml(data).getroot()
    except xoev.XmlRejected as exc:
        raise ValueError(f"not a kcbus receipt: {exc.reason_code}") from exc
    qname = etree.QName(root)
    if qname.namespace != NAMESPACE:
        raise ValueError("not a kcbus receipt: wrong namespace")
    schema = _schema()
    if not schema.validate(root):
        first = schema.error_log[0]  # type: ignore[index]
        raise ValueError(f"not a valid kcbus receipt: line {first.line}: {redact(first.message)}")
    receipt_type = ReceiptType(qname.localname)
    head = root.find("nachrichtenkopf.g2g")
    assert head is not None  # guaranteed by the schema
    ref = root.find("bezug")
    assert ref is not None
    eingang = root.find("eingang")
    return Receipt(
        type=receipt_type,
        uuid=head.findtext("identifikation.nachricht/nachrichtenUUID") or "",
        created=_dt(head.findtext("identifikation.nachricht/erstellungszeitpunkt")),
        test=root.get("test") == "true",
        reader=_read_party(head.find("leser")),
        author=_read_party(head.find("autor")),
        reference=Reference(
            received_at=_dt(ref.findtext("eingangszeitpunkt")),
            message_uuid=ref.findtext("nachrichtenUUID") or ref.findtext("nachrichtenID"),
            envelope_id=ref.findtext("umschlagID"),
            message_type=ref.findtext("nachrichtentyp"),
        ),
        faults=tuple(
            Fault(
                reason_code=f.findtext("grund/code") or "",
                text=f.findtext("text") or "",
                xpath=f.findtext("xpath"),
                line=int(f.findtext("zeile") or 0) or None,
            )
            for f in root.iterfind("fehler")
        ),
        handovers=tuple(
            Handover(
                recipient=h.findtext("empfaenger") or "",
                at=_dt(h.findtext("zustellzeitpunkt")),
                envelope_id=h.findtext("umschlagID"),
            )
            for h in root.iterfind("zustellung")
        ),
        route=None if eingang is None else eingang.findtext("fluss"),
        inspection=None if eingang is None else eingang.findtext("pruefung"),
    )
