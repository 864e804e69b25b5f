"""kcbus's code lists (OASIS genericode, ``kcbus/receipts/schemas/codelists/``) and reason codes.

The rejection-reason list ``urn:kcbus:codeliste:rueckweisungsgrund`` holds one code per
``reason_code`` of a :class:`~xoev.PartnerFault` class anywhere in kcbus (xoev, adapters,
kcbus); a test walks the error classes to keep it complete. A code an error carries that the
list does not know (a newer adapter) is sent as the generic ``partner`` code, its own code
kept in the text — the receipt must validate against the list the partner has.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from lxml import etree

__all__ = [
    "MESSAGE_TYPE_LIST",
    "REASON_LIST",
    "SCHEMA_DIR",
    "reason_codes",
    "sendable_reason",
]

#: ``kcbus/receipts/schemas`` — the receipt XSD and its code lists (package data: in the wheel).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

REASON_LIST = ("urn:kcbus:codeliste:rueckweisungsgrund", "1.0")
MESSAGE_TYPE_LIST = ("urn:kcbus:codeliste:quittungsnachrichten", "1.0")

_GC = "{http://docs.oasis-open.org/codelist/ns/genericode/1.0/}"


@cache
def _load(uri: str, version: str) -> Mapping[str, str]:
    path = SCHEMA_DIR / "codelists" / f"{uri.replace(':', '_')}_{version}.xml"
    # Our own shipped file, but parsed the hardened way all the same.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(str(path), parser).getroot()
    codes: dict[str, str] = {}
    for row in root.iter("Row", f"{_GC}Row"):
        values = {
            value.get("ColumnRef"): (value.findtext("SimpleValue") or "").strip()
            for value in row.iter("Value", f"{_GC}Value")
        }
        codes[values["code"]] = values.get("beschreibung", "")
    return codes


def reason_codes() -> Mapping[str, str]:
    """Code → German description, from the shipped genericode list."""
    return _load(*REASON_LIST)


def sendable_reason(code: str) -> str:
    """``code`` if the list has it, else the generic ``partner``."""
    return code if code in reason_codes() else "partner"
