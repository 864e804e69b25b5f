"""Small helpers shared by the header profiles: namespace-agnostic child lookup, value parsing.

Profiles look children up by local name within the expected namespace set, because families
mix qualified and unqualified forms (XBau restricts ``nachrichtenkopf.g2g`` to
``form="unqualified"``; the XÖV library type ``BehoerdeType`` is qualified).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from lxml import etree

from xoev._header import BadHeader


def child(element: etree._Element | None, local: str) -> etree._Element | None:
    """First child element with this local name (any namespace), or None."""
    if element is None:
        return None
    # ``{*}`` matches any namespace and none, and runs in C (lxml ElementPath).
    return element.find("{*}" + local)


def children(element: etree._Element | None, local: str) -> list[etree._Element]:
    if element is None:
        return []
    return [c for c in element.iterchildren(tag=etree.Element) if etree.QName(c).localname == local]


def path(element: etree._Element | None, *locals_: str) -> etree._Element | None:
    for local in locals_:
        element = child(element, local)
    return element


def text(element: etree._Element | None) -> str | None:
    """Whitespace-collapsed text content, None if absent or empty."""
    if element is None or element.text is None:
        return None
    value = " ".join(element.text.split())
    return value or None


def code(element: etree._Element | None) -> str | None:
    """The ``code`` of an ``xoev-code:Code`` element (unqualified child ``code``)."""
    return text(child(element, "code"))


def xs_datetime(profile: str, where: str, value: str | None) -> datetime | None:
    """Parse an ``xs:dateTime`` (XSD 1.0 Part 2 §3.2.7)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadHeader(profile, where, "not an xs:dateTime") from None


_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")


def hl7_ts(profile: str, where: str, value: str | None) -> datetime | None:
    """Parse an HL7 V3 ``TS`` (``YYYYMMDDHHMMSS.UUUU[+|-ZZzz]``, HL7 V3 Data Types R1 §2.23)."""
    if value is None:
        return None
    match = _TS.fullmatch(value)
    if match is None:
        raise BadHeader(profile, where, "not an HL7 TS")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = None
    if zone:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    try:
        return datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
            int(second or 0), int((fraction or "0").ljust(6, "0")), tzinfo=tz,
        )
    except ValueError:
        raise BadHeader(profile, where, "not an HL7 TS") from None


def required(profile: str, where: str, value: str | None) -> str:
    if not value:
        raise BadHeader(profile, where, "missing")
    return value
