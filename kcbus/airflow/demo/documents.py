"""Realistic demo documents for the four demo flows (synthetic data, no real persons).

Pure functions: bytes out, time and IDs in as parameters. The documents are valid against the
schemas kcbus ships in ``schemas/demo/``; the Entlassbrief is also valid HL7 CDA R2 and the
tariff publication valid NeTEx 2.0 (tests check both against the official packages).
:func:`broken` turns a valid document into one that fails schema validation the way partner
software typically breaks (a missing mandatory element), keeping the header readable so the
bus can send a Rückweisung.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

__all__ = [
    "Office",
    "bauantrag",
    "broken",
    "entlassbrief",
    "formelle_pruefung",
    "mitteilung",
    "rundschreiben",
    "tarif_publication",
]

_BAU_NS = "urn:kcbus:demo:bau:1.0"
_KOM_NS = "urn:kcbus:demo:kommunal:1.0"
#: XÖV code list of directory services (DVDV = Deutsches Verwaltungsdiensteverzeichnis).
_VZD_LIST = 'listURI="urn:de:xoev:codeliste:verzeichnisdienst" listVersionID="1"'


@dataclass(frozen=True)
class Office:
    """A party as the XÖV head names it (``bn-beh:BehoerdeType``)."""

    verzeichnisdienst: str
    kennung: str
    name: str


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _party(tag: str, office: Office) -> str:
    return (
        f"<{tag}><verzeichnisdienst {_VZD_LIST}><code>{escape(office.verzeichnisdienst)}</code>"
        f"</verzeichnisdienst><kennung>{escape(office.kennung)}</kennung>"
        f"<name>{escape(office.name)}</name></{tag}>"
    )


def _xoev(
    ns: str, standard: str, message_type: str, message_id: str, created: datetime,
    author: Office, reader: Office, body: str, *, test: bool,
) -> bytes:
    list_uri = f"urn:kcbus:demo:codeliste:{standard}-nachrichten"
    number = message_type.rsplit(".", 1)[-1]
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<m:{message_type} xmlns:m="{ns}" produkt="kcbus-demo" '
        f'produkthersteller="Kompetenzcenter Kommunal Digital" produktversion="0.1" '
        f'standard="{standard}" version="1.0" test="{"true" if test else "false"}">'
        "<nachrichtenkopf.g2g><identifikation.nachricht>"
        f"<nachrichtenUUID>{message_id}</nachrichtenUUID>"
        f'<nachrichtentyp listURI="{list_uri}" listVersionID="1.0"><code>{number}</code>'
        "</nachrichtentyp>"
        f"<erstellungszeitpunkt>{_iso(created)}</erstellungszeitpunkt>"
        f"</identifikation.nachricht>{_party('leser', reader)}{_party('autor', author)}"
        f"</nachrichtenkopf.g2g>{body}</m:{message_type}>\n"
    )
    return text.encode("utf-8")


def bauantrag(
    *, message_id: str, created: datetime, author: Office, reader: Office, reference: str,
    plans: tuple[str, ...] = (), test: bool = False,
) -> bytes:
    """``baugenehmigung.antrag.0200``: an application with its plans named as attachments."""
    anlagen = "".join(
        "<anlage>"
        f"<dateiname>{escape(name)}</dateiname>"
        '<dokumentart listURI="urn:kcbus:demo:codeliste:bauvorlagen" listVersionID="1.0">'
        "<code>lageplan</code></dokumentart>"
        "<mimeType>application/pdf</mimeType></anlage>"
        for name in plans
    )
    body = (
        f"<referenzAntragsservice>{escape(reference)}</referenzAntragsservice>"
        "<vorhaben><bezeichnung>Neubau eines Einfamilienhauses mit Carport</bezeichnung>"
        '<verfahrensart listURI="urn:kcbus:demo:codeliste:verfahrensart" listVersionID="1.0">'
        "<code>vereinfacht</code></verfahrensart>"
        "<grundstueck><gemarkung>Musterdorf</gemarkung><flur>3</flur>"
        "<flurstueck>117/4</flurstueck><strasse>Am Anger</strasse><hausnummer>12</hausnummer>"
        "</grundstueck><bruttoRauminhaltM3>742.5</bruttoRauminhaltM3></vorhaben>"
        "<bauherr><name>Erika Musterfrau</name>"
        "<anschrift>Am Anger 10, 12345 Musterdorf</anschrift></bauherr>"
        f"{anlagen}"
    )
    return _xoev(_BAU_NS, "kcbus-demo-bau", "baugenehmigung.antrag.0200", message_id, created,
                 author, reader, body, test=test)


def formelle_pruefung(
    *, message_id: str, created: datetime, author: Office, reader: Office, antrag_id: str,
    aktenzeichen: str, complete: bool,
) -> bytes:
    """``baugenehmigung.formellePruefung.0201``: the district office's formal check."""
    befund = "" if complete else "<befund>Lageplan ohne Maßstab</befund>"
    frist = "" if complete else f"<frist>{(created + timedelta(days=28)).date()}</frist>"
    body = (
        f"<bezugAntrag>{antrag_id}</bezugAntrag><aktenzeichen>{escape(aktenzeichen)}"
        f"</aktenzeichen><antragVollstaendig>{'true' if complete else 'false'}"
        f"</antragVollstaendig>{befund}{frist}"
    )
    return _xoev(_BAU_NS, "kcbus-demo-bau", "baugenehmigung.formellePruefung.0201", message_id,
                 created, author, reader, body, test=False)


def rundschreiben(
    *, message_id: str, created: datetime, author: Office, reader: Office, title: str,
    test: bool = False,
) -> bytes:
    """``kommunal.rundschreiben.0100``: a circular from the district office."""
    body = (
        f"<dokument><titel>{escape(title)}</titel><aktenzeichen>LRA-10-{created:%Y}-041"
        "</aktenzeichen><text>Bitte melden Sie die Zahl der Plätze in der Kindertagespflege "
        "zum Stichtag.</text></dokument>"
        f"<antwortBis>{(created + timedelta(days=14)).date()}</antwortBis>"
    )
    return _xoev(_KOM_NS, "kcbus-demo-kommunal", "kommunal.rundschreiben.0100", message_id,
                 created, author, reader, body, test=test)


def mitteilung(
    *, message_id: str, created: datetime, author: Office, reader: Office, bezug: str | None,
) -> bytes:
    """``kommunal.mitteilung.0110``: a municipality's answer."""
    ref = f"<bezug>{bezug}</bezug>" if bezug else ""
    body = (
        f"{ref}<dokument><titel>Meldung Kindertagespflege</titel>"
        "<text>Zum Stichtag stehen 14 Plätze zur Verfügung.</text></dokument>"
    )
    return _xoev(_KOM_NS, "kcbus-demo-kommunal", "kommunal.mitteilung.0110", message_id,
                 created, author, reader, body, test=False)


def _hl7_ts(moment: datetime) -> str:
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def entlassbrief(
    *, document_id: str, set_id: str, created: datetime, hospital: Office, practice: Office,
    patient_number: int, version: int = 1,
) -> bytes:
    """A discharge letter as HL7 CDA R2 (LOINC 18842-5 "Discharge summary").

    Author and recipient are identified by their institution IDs (``Office.verzeichnisdienst``
    is the OID of the ID system, e.g. 1.2.276.0.76.4.5 for German IK numbers, ``kennung`` the
    ID): that is what the bus matches against its partner registry. Patient data is synthetic.
    """
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="DE"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.276.0.76.4.17.9814184919" extension="{document_id}"/>
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC"
        displayName="Discharge summary"/>
  <title>Entlassbrief</title>
  <effectiveTime value="{_hl7_ts(created)}"/>
  <confidentialityCode code="R" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="de-DE"/>
  <setId root="1.2.276.0.76.4.17.9814184919" extension="{set_id}"/>
  <versionNumber value="{version}"/>
  <recordTarget>
    <patientRole>
      <id root="1.2.276.0.76.4.8" extension="DEMO{patient_number:06d}"/>
      <patient>
        <name><given>Max</given><family>Demo-{patient_number}</family></name>
        <administrativeGenderCode code="M" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="19580312"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{_hl7_ts(created)}"/>
    <assignedAuthor>
      <id root="{escape(hospital.verzeichnisdienst)}" extension="{escape(hospital.kennung)}"/>
      <assignedPerson>
        <name><prefix>Dr. med.</prefix><given>Anna</given><family>Beispiel</family></name>
      </assignedPerson>
      <representedOrganization><name>{escape(hospital.name)}</name></representedOrganization>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="{escape(hospital.verzeichnisdienst)}" extension="{escape(hospital.kennung)}"/>
        <name>{escape(hospital.name)}</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <informationRecipient>
    <intendedRecipient>
      <id root="{escape(practice.verzeichnisdienst)}" extension="{escape(practice.kennung)}"/>
      <receivedOrganization><name>{escape(practice.name)}</name></receivedOrganization>
    </intendedRecipient>
  </informationRecipient>
  <component>
    <structuredBody>
      <component>
        <section>
          <code code="11535-2" codeSystem="2.16.840.1.113883.6.1"
                displayName="Hospital discharge Dx"/>
          <title>Diagnosen</title>
          <text><paragraph>Ambulant erworbene Pneumonie (J18.9), ausgeheilt.</paragraph></text>
        </section>
      </component>
      <component>
        <section>
          <code code="10183-2" codeSystem="2.16.840.1.113883.6.1"
                displayName="Hospital discharge medications"/>
          <title>Medikation bei Entlassung</title>
          <text><paragraph>Amoxicillin 1000 mg 1-1-1 für weitere 3 Tage.</paragraph></text>
        </section>
      </component>
    </structuredBody>
  </component>
</ClinicalDocument>
"""
    return text.encode("utf-8")


def tarif_publication(
    *, participant: str, created: datetime, authority: str, zones: int, valid_from: datetime,
) -> bytes:
    """A NeTEx ``PublicationDelivery`` with ``zones`` tariff zones (sized by ``zones``)."""
    code = authority.upper()
    zone_xml = "".join(
        f'<TariffZone version="1" id="{code}:TariffZone:{n}">'
        f"<Name>Tarifgebiet {n}</Name><Description>Wabe {n} im Übergangstarif {code}"
        "</Description></TariffZone>"
        for n in range(1, zones + 1)
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<PublicationDelivery xmlns="http://www.netex.org.uk/netex" version="2.0">'
        f"<PublicationTimestamp>{_iso(created)}</PublicationTimestamp>"
        f"<ParticipantRef>{escape(participant)}</ParticipantRef>"
        f"<Description>Übergangstarif {code}, Tagesstand {created.date()}</Description>"
        "<dataObjects>"
        f'<CompositeFrame version="1" id="{code}:CompositeFrame:{created:%Y%m%d}">'
        "<validityConditions><ValidBetween>"
        f"<FromDate>{_iso(valid_from)}</FromDate></ValidBetween></validityConditions>"
        "<frames>"
        f'<ServiceFrame version="1" id="{code}:ServiceFrame:zones">'
        f"<Name>Tarifgebiete {code}</Name><tariffZones>{zone_xml}</tariffZones></ServiceFrame>"
        f'<FareFrame version="1" id="{code}:FareFrame:tariffs"><Name>Tarife {code}</Name>'
        f'<tariffs><Tariff version="1" id="{code}:Tariff:uebergang">'
        f"<Name>Übergangstarif {code}</Name>"
        f'<OperatorRef version="1" ref="{code}:Operator:1"/></Tariff></tariffs></FareFrame>'
        "</frames></CompositeFrame></dataObjects></PublicationDelivery>\n"
    )
    return text.encode("utf-8")


def broken(document: bytes) -> bytes:
    """The same document with its first mandatory body element dropped (schema-invalid)."""
    for start, end in (
        (b"<referenzAntragsservice>", b"</referenzAntragsservice>"),
        (b"<dokument>", b"</dokument>"),
        (b"<ParticipantRef>", b"</ParticipantRef>"),
        (b"<custodian>", b"</custodian>"),
    ):
        head, found, rest = document.partition(start)
        if found:
            return head + rest.partition(end)[2]
    raise ValueError("no known mandatory element to drop")
