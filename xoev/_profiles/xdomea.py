"""Profile: xdomea ``Kopf`` (namespaces ``urn:xoev-de:xdomea:schema:<version>``).

Spec: xdomea 3.0.0 / 3.1.0, ``xdomea-Baukasten.xsd`` (``NachrichtenkopfType``)::

    <xdomea:Kopf>
      <ProzessID/> <Nachrichtentyp><code/></Nachrichtentyp> <Erstellungszeitpunkt/>
      <Absender> <Behoerdenkennung> <Behoerdenschluessel><code/></..> [<Praefix><code/></..>]
                 </Behoerdenkennung> <Institution><Name/></Institution> ... </Absender>
      <Empfaenger> ...same... </Empfaenger> ...

xdomea has no separate message UUID: message_id and process_id are the ``ProzessID``.
Parties: ``verzeichnisdienst`` is the ``listURI`` of the ``Behoerdenschluessel`` code (or
``xdomea:behoerdenkennung``), ``kennung`` is ``Praefix:Behoerdenschluessel`` (codes),
name is the ``Institution/Name``; person names in the sender/recipient are never read.
version = the namespace's last segment (``3.1.0``); no test flag.
"""

from __future__ import annotations

from lxml import etree

from xoev._header import MessageHeader, Party
from xoev._profiles._util import child, code, path, required, text, xs_datetime

NAMESPACE_PREFIX = "urn:xoev-de:xdomea:schema:"
NAME = "xdomea-kopf"


def _party(element: etree._Element | None) -> Party | None:
    kennung_element = child(element, "Behoerdenkennung")
    schluessel_element = child(kennung_element, "Behoerdenschluessel")
    schluessel = code(schluessel_element)
    if schluessel is None or schluessel_element is None:
        return None
    praefix = code(child(kennung_element, "Praefix"))
    directory = schluessel_element.get("listURI") or "xdomea:behoerdenkennung"
    kennung = f"{praefix}:{schluessel}" if praefix else schluessel
    return Party(directory, kennung, text(path(element, "Institution", "Name")))


class XdomeaProfile:
    name = NAME

    def matches(self, root: etree._Element) -> bool:
        namespace = etree.QName(root).namespace or ""
        if not namespace.startswith(NAMESPACE_PREFIX):
            return False
        head = next(root.iterchildren(tag=etree.Element), None)
        return head is not None and head.tag == f"{{{namespace}}}Kopf"

    def read(self, root: etree._Element) -> MessageHeader:
        namespace = etree.QName(root).namespace or ""
        head = child(root, "Kopf")
        process_id = required(NAME, "Kopf/ProzessID", text(child(head, "ProzessID")))
        reader = _party(child(head, "Empfaenger"))
        return MessageHeader(
            message_id=process_id,
            message_type=etree.QName(root).localname,
            created=xs_datetime(NAME, "Kopf/Erstellungszeitpunkt",
                                text(child(head, "Erstellungszeitpunkt"))),
            author=_party(child(head, "Absender")),
            readers=(reader,) if reader else (),
            standard="xdomea",
            version=namespace.removeprefix(NAMESPACE_PREFIX) or None,
            test=False,
            profile=NAME,
            root=root.tag,
            process_id=process_id,
        )


PROFILE = XdomeaProfile()
