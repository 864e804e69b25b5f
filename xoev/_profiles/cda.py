"""Profile: HL7 CDA Release 2 header (``ClinicalDocument``, namespace ``urn:hl7-org:v3``).

Spec: HL7 CDA R2, ``POCD_MT000040.xsd`` (the German eArztbrief/Entlassbrief is a CDA R2
document with German templates). Mapping:

* message_id = ``id`` as ``root^extension`` (an HL7 V3 ``II``; ``root`` alone if no extension)
* message_type = ``code/@code`` (the LOINC document type, e.g. ``18842-5`` Entlassbrief)
* created = ``effectiveTime/@value`` (HL7 ``TS``)
* process_id = ``setId`` (the document series), revision = ``versionNumber/@value``
* author = ``author/assignedAuthor/id`` (name: ``representedOrganization/name``, never the
  person's name)
* readers = each ``informationRecipient/intendedRecipient`` (its ``id``, else
  ``receivedOrganization/id``)
* custodian = ``custodian/assignedCustodian/representedCustodianOrganization``
* subject_ref = ``recordTarget/patientRole/id`` as ``root^extension``; the patient's name,
  birth date and address are never read.

CDA has no test flag: ``test`` is always false; standard ``CDA``, version ``R2``.
"""

from __future__ import annotations

from lxml import etree

from xoev._header import MessageHeader, Party
from xoev._profiles._util import child, children, hl7_ts, path, required, text

NAMESPACE = "urn:hl7-org:v3"
NAME = "hl7-cda-r2"
_ROOT = f"{{{NAMESPACE}}}ClinicalDocument"


def _ii(element: etree._Element | None) -> str | None:
    """An HL7 ``II`` as ``root^extension``."""
    if element is None:
        return None
    root = element.get("root")
    extension = element.get("extension")
    if root and extension:
        return f"{root}^{extension}"
    return root or extension


def _party(identifier: etree._Element | None, name: str | None) -> Party | None:
    if identifier is None:
        return None
    root = identifier.get("root")
    extension = identifier.get("extension")
    if extension:
        return Party(root, extension, name)
    if root:
        return Party(None, root, name)
    return None


class CdaProfile:
    name = NAME

    def matches(self, root: etree._Element) -> bool:
        return root.tag == _ROOT

    def read(self, root: etree._Element) -> MessageHeader:
        message_id = required(NAME, "ClinicalDocument/id", _ii(child(root, "id")))
        assigned = path(root, "author", "assignedAuthor")
        author = _party(child(assigned, "id"),
                        text(path(assigned, "representedOrganization", "name")))
        readers: list[Party] = []
        for recipient in children(root, "informationRecipient"):
            intended = child(recipient, "intendedRecipient")
            organization = child(intended, "receivedOrganization")
            identifier = child(intended, "id")
            if identifier is None:
                identifier = child(organization, "id")
            party = _party(identifier, text(child(organization, "name")))
            if party is not None:
                readers.append(party)
        organization = path(root, "custodian", "assignedCustodian",
                            "representedCustodianOrganization")
        version_number = child(root, "versionNumber")
        effective = child(root, "effectiveTime")
        code_element = child(root, "code")
        return MessageHeader(
            message_id=message_id,
            message_type=code_element.get("code") if code_element is not None else None,
            created=hl7_ts(NAME, "ClinicalDocument/effectiveTime/@value",
                           effective.get("value") if effective is not None else None),
            author=author,
            readers=tuple(readers),
            standard="CDA",
            version="R2",
            test=False,
            profile=NAME,
            root=root.tag,
            process_id=_ii(child(root, "setId")),
            revision=version_number.get("value") if version_number is not None else None,
            custodian=_party(child(organization, "id"), text(child(organization, "name"))),
            subject_ref=_ii(path(root, "recordTarget", "patientRole", "id")),
        )


PROFILE = CdaProfile()
