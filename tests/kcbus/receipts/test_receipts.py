"""Receipts: each kind is a valid kcbus-quittung message with an XÖV header that kcbus's own
header reader understands; every rejection reason a partner can cause has a code in the
shipped code list; validator quotes (possibly personal data) never reach a receipt."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from datetime import UTC, datetime

import pytest

import xoev
from kcbus.receipts import (
    Addressee,
    Fault,
    Handover,
    ReceiptBuilder,
    ReceiptType,
    Reference,
    read_receipt,
    reason_codes,
    redact,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BUS = Addressee("DVDV", "kcbus:091870000000", "kcbus Landkreis Musterkreis")
READER = Addressee("DVDV", "bau:091870120000", "Gemeinde Musterdorf")
BUILDER = ReceiptBuilder(BUS, product="kcbus", vendor="KC Kommunal Digital",
                         product_version="0.1.0")


@pytest.mark.parametrize("kind", list(ReceiptType))
def test_each_receipt_validates_and_reads_back(kind: ReceiptType) -> None:
    original = str(uuid.uuid4())
    data = BUILDER.build(
        kind, receipt_uuid=str(uuid.uuid4()), now=NOW, reader=READER,
        reference=Reference(NOW, original, "env-1", "baugenehmigung.antrag.0200"),
        test=True, route="bauantrag",
        faults=[Fault("schema-invalid", "Element 'kennung': missing", "/x:a/b", 12)],
        handovers=[Handover("lra", NOW, "env-2")],
    )
    receipt = read_receipt(data)
    assert receipt.type is kind and receipt.test
    assert receipt.reference.message_uuid == original
    assert receipt.reader == READER and receipt.author == BUS
    header = xoev.read_header(xoev.parse_xml(data))  # an ordinary XÖV g2g header
    assert header.message_type == kind.value and header.standard == "kcbus-quittung"
    assert header.readers[0].kennung == READER.kennung
    if kind is ReceiptType.REJECTED:
        (fault,) = receipt.faults
        assert (fault.reason_code, fault.xpath, fault.line) == ("schema-invalid", "/x:a/b", 12)
    if kind is ReceiptType.DELIVERED:
        assert [h.recipient for h in receipt.handovers] == ["lra"]


def test_other_message_ids_are_referenced_too() -> None:
    cda_id = "1.2.276.0.76.4.5.260912345.1^EB-2026-000417"
    data = BUILDER.build(ReceiptType.ACCEPTED, receipt_uuid=str(uuid.uuid4()), now=NOW,
                         reader=READER, reference=Reference(NOW, cda_id))
    assert read_receipt(data).reference.message_uuid == cda_id


def _partner_faults() -> set[type[xoev.PartnerFault]]:
    for package in ("xoev", "adapters.envelope", "kcbus"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            skip = (".airflow", ".cli", ".migrations", "__main__")
            if any(part in info.name for part in skip):
                continue
            importlib.import_module(info.name)
    found: set[type[xoev.PartnerFault]] = set()
    todo: list[type[xoev.PartnerFault]] = [xoev.PartnerFault]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    # Transport errors are about the recipient's side, not reasons to reject a sender.
    return {c for c in found if not c.__module__.startswith("adapters.transport")}


def test_every_rejection_reason_is_in_the_code_list() -> None:
    codes = reason_codes()
    missing = {c.__name__: c.reason_code for c in _partner_faults()
               if c.reason_code not in codes}
    assert missing == {}


def test_unknown_codes_fall_back_and_quotes_are_redacted() -> None:
    data = BUILDER.build(
        ReceiptType.REJECTED, receipt_uuid=str(uuid.uuid4()), now=NOW, reader=READER,
        reference=Reference(NOW, envelope_id="env-9"),
        faults=[Fault("brand-new-check",
                      "Element 'name': The value 'Erika Beispiel' is not accepted")],
    )
    (fault,) = read_receipt(data).faults
    assert fault.reason_code == "partner"
    assert "Erika" not in fault.text and "brand-new-check" in fault.text
    assert redact("Element 'vorname': 'Max' is not a valid value") == (
        "Element 'vorname': '…' is not a valid value"
    )
