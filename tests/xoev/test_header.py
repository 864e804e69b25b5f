"""Header profiles: one MessageHeader from every supported family."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from xoev import BadHeader, MessageHeader, Party, UnknownDocument, parse_xml, read_header

CET = timezone(timedelta(hours=1))


def header_of(path: Path) -> MessageHeader:
    return read_header(parse_xml(path.read_bytes()))


def test_xbau_unqualified_g2g(data: Path) -> None:
    header = header_of(data / "xbau-baugenehmigung-antrag-0200.xml")
    assert header.profile == "xoev-g2g-1.1-unqualified"
    assert header.message_id == "6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6"
    assert header.message_type == "baugenehmigung.antrag.0200"
    assert header.created == datetime(2026, 3, 2, 9, 15, tzinfo=CET)
    assert header.author == Party("DVDV", "bau:091870120000")
    assert header.readers == (Party("DVDV", "bau:091870000000"),)
    assert header.readers[0].name == "Landratsamt Musterkreis, untere Bauaufsichtsbehörde"
    assert (header.standard, header.version, header.test) == ("XBau-Hochbau", "2.6", False)
    assert header.root == "{http://www.xleitstelle.de/xbau/2/6}baugenehmigung.antrag.0200"


QUALIFIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<m:gewerbeanzeige.anmeldung.0100 xmlns:m="urn:example:xgewerbe"
    xmlns:g2g="http://xoev.de/schemata/basisnachricht/g2g/1_1"
    xmlns:beh="http://xoev.de/schemata/basisnachricht/behoerde/1_1"
    produkt="p" produkthersteller="h" standard="XGewerbeanzeige" version="1.2" test="true">
  <g2g:nachrichtenkopf.g2g>
    <g2g:identifikation.nachricht>
      <g2g:nachrichtenUUID>11111111-2222-4333-8444-555555555555</g2g:nachrichtenUUID>
      <g2g:nachrichtentyp><code>0100</code></g2g:nachrichtentyp>
      <g2g:erstellungszeitpunkt>2026-01-05T08:00:00Z</g2g:erstellungszeitpunkt>
    </g2g:identifikation.nachricht>
    <g2g:leser>
      <beh:verzeichnisdienst listVersionID="2"><code>DVDV</code></beh:verzeichnisdienst>
      <beh:kennung>gew:09187000</beh:kennung>
      <beh:name>Gewerbeamt</beh:name>
    </g2g:leser>
    <g2g:autor>
      <beh:verzeichnisdienst listVersionID="2"><code>PVOG</code></beh:verzeichnisdienst>
      <beh:kennung>portal:1</beh:kennung>
      <beh:name>Portal</beh:name>
    </g2g:autor>
  </g2g:nachrichtenkopf.g2g>
</m:gewerbeanzeige.anmeldung.0100>"""


def test_qualified_g2g_and_test_flag() -> None:
    header = read_header(parse_xml(QUALIFIED))
    assert header.profile == "xoev-g2g-1.1"
    assert header.message_type == "gewerbeanzeige.anmeldung.0100"
    assert header.created == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert header.author == Party("PVOG", "portal:1")
    assert header.readers[0].address == "DVDV:gew:09187000"
    assert header.test is True


def test_xjustiz_gds_header(data: Path) -> None:
    header = header_of(data / "xjustiz-basisnachricht-0005006.xml")
    assert header.profile == "xjustiz-gds"
    assert header.message_id == "5d6e7f80-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
    assert header.message_type == "nachricht.gds.basisnachricht.0005006"
    assert (header.standard, header.version) == ("XJustiz", "3.6.2")
    assert header.author is not None and header.author.verzeichnisdienst == "safe"
    assert header.author.kennung.startswith("DE.Justiz.")
    assert header.readers[0].kennung.startswith("DE.BEBPO.")
    assert header.process_id == "8a9b0c1d-2e3f-4a5b-9c6d-7e8f9a0b1c2d"


def test_cda_entlassbrief_header_keeps_patient_as_reference_only(data: Path) -> None:
    header = header_of(data / "cda-entlassbrief.xml")
    assert header.profile == "hl7-cda-r2"
    assert header.message_id == "1.2.276.0.76.4.5.260912345.1^EB-2026-000417"
    assert header.process_id == "1.2.276.0.76.4.5.260912345.2^EB-2026-000417"
    assert header.revision == "1"
    assert header.message_type == "18842-5"
    assert header.subject_ref == "1.2.276.0.76.4.8^X000000001"
    assert header.author == Party("1.2.276.0.76.4.16", "999999901")
    assert header.readers == (Party("1.2.276.0.76.4.17", "999999900"),)
    assert header.custodian == Party("1.2.276.0.76.4.5", "260912345")
    assert header.created == datetime(2026, 3, 2, 14, 30, tzinfo=CET)
    shown = repr(header)
    for personal in ("Mustermann", "Max", "X000000001", "Beispielarzt", "19580412"):
        assert personal not in shown


def test_hl7_sample_document(standards: Path) -> None:
    header = header_of(standards / "cda-r2/infrastructure/cda/SampleCDADocument.xml")
    assert header.message_id == "2.16.840.1.113883.19.4^c266"
    assert header.revision == "2"
    assert header.created == datetime(2000, 4, 7)


def test_netex_publication_delivery(standards: Path) -> None:
    header = header_of(standards / "netex-2.0/examples/Netex_era_crossborder_de.xml")
    assert header.profile == "netex-publication"
    assert header.message_id == "SYS001/2018-04-01T09:30:47.0Z"
    assert header.author == Party(None, "SYS001")
    assert (header.standard, header.version) == ("NeTEx", "1.0")
    requested = header_of(standards / "netex-2.0/examples/Netex_de_calendarExample_01_gd.xml")
    assert requested.readers == (Party(None, "SYS002"),)


def test_xdomea_kopf(standards: Path) -> None:
    path = standards / "xdomea-3/examples/3.1.0/xx_Aussonderung.Anbieteverzeichnis.0501.xml"
    header = header_of(path)
    assert header.profile == "xdomea-kopf"
    assert header.message_id == header.process_id == "242f44e8-bebf-4503-a086-db252c6a4277"
    assert header.message_type == "Aussonderung.Anbieteverzeichnis.0501"
    assert header.version == "3.1.0"
    assert header.author is not None
    assert header.author.kennung == "AbsBehoerdenkennungPraefixCode:LATh"
    assert header.author.name == "AbsXdomeaInstitutionName"
    assert "AbsXdomeaInstitutionName" not in repr(header.author)  # names stay out of reprs


def test_unknown_document_names_root_and_namespace() -> None:
    with pytest.raises(UnknownDocument) as caught:
        read_header(parse_xml(
            b"<x:Bestellung xmlns:x=\"urn:example:shop\"><a>geheim</a></x:Bestellung>"
        ))
    assert caught.value.root == "Bestellung"
    assert caught.value.namespace == "urn:example:shop"
    assert "Bestellung" in str(caught.value) and "urn:example:shop" in str(caught.value)
    assert "geheim" not in str(caught.value)
    with pytest.raises(UnknownDocument, match="no namespace"):
        read_header(parse_xml(b"<plain/>"))


def test_missing_header_field_is_a_bad_header() -> None:
    broken = QUALIFIED.replace(b"11111111-2222-4333-8444-555555555555", b"")
    with pytest.raises(BadHeader) as caught:
        read_header(parse_xml(broken))
    assert caught.value.path.endswith("nachrichtenUUID")
    bad_time = QUALIFIED.replace(b"2026-01-05T08:00:00Z", b"gestern")
    with pytest.raises(BadHeader, match="erstellungszeitpunkt"):
        read_header(parse_xml(bad_time))


def test_header_model_validates() -> None:
    with pytest.raises(ValueError):
        Party("DVDV", "")
    with pytest.raises(ValueError):
        MessageHeader("", None, None, None, (), None, None, False, "p", "r")
