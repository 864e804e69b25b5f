"""Profile: XJustiz GDS header (``nachrichtenkopf`` of type ``Type.GDS.Nachrichtenkopf``).

Spec: XJustiz 3.6.2, ``xjustiz_0000_grunddatensatz_3_6.xsd`` (namespace ``http://www.xjustiz.de``).
Every XJustiz message root (``nachricht.gds.fehler.0005007``, ...) has the child
``nachrichtenkopf``::

    <nachrichtenkopf xjustizVersion="3.6.2">
      <erstellungszeitpunkt/>
      <absender> <informationen/> [<aktenzeichen/>] <eigeneNachrichtenID/> </absender>
      <empfaenger> <informationen/> <auswahl_aktenzeichen/> [<fremdeNachrichtenID/>] </empfaenger>
      [<nachrichtenuebergreifenderProzess><prozessID/>...]
      ...

Parties (``Type.GDS.Kommunikationspartner``): the SAFE ID (``routingInformationAusSafeverzeichnis``,
the EGVP directory) when present, else the chosen identifier of ``auswahl_kommunikationspartner``
(``gericht``, ``rvTraeger``, ``polizeibehoerde``, ``finanzbehoerde`` codes; ``sonstige`` text),
with the choice's name as ``verzeichnisdienst`` (``xjustiz:gericht``...).
XJustiz has no test flag: ``test`` is always false.
"""

from __future__ import annotations

from lxml import etree

from xoev._header import MessageHeader, Party
from xoev._profiles._util import child, code, path, required, text, xs_datetime

NAMESPACE = "http://www.xjustiz.de"
NAME = "xjustiz-gds"


def _party(informationen: etree._Element | None) -> Party | None:
    if informationen is None:
        return None
    safe = text(child(informationen, "routingInformationAusSafeverzeichnis"))
    choice = child(informationen, "auswahl_kommunikationspartner")
    chosen = None
    if choice is not None:
        chosen = next(choice.iterchildren(tag=etree.Element), None)
    name = None
    kennung = None
    kind = None
    if chosen is not None:
        kind = etree.QName(chosen).localname
        kennung = code(chosen) or text(chosen)
        name = text(child(chosen, "name")) or (text(chosen) if kind == "sonstige" else None)
    if safe:
        return Party("safe", safe, name)
    if kennung is None:
        return None
    return Party(f"xjustiz:{kind}", kennung, name)


class XJustizProfile:
    name = NAME

    def matches(self, root: etree._Element) -> bool:
        if etree.QName(root).namespace != NAMESPACE:
            return False
        head = next(root.iterchildren(tag=etree.Element), None)
        return head is not None and head.tag == f"{{{NAMESPACE}}}nachrichtenkopf"

    def read(self, root: etree._Element) -> MessageHeader:
        head = child(root, "nachrichtenkopf")
        message_id = required(NAME, "nachrichtenkopf/absender/eigeneNachrichtenID",
                              text(path(head, "absender", "eigeneNachrichtenID")))
        reader = _party(path(head, "empfaenger", "informationen"))
        return MessageHeader(
            message_id=message_id,
            message_type=etree.QName(root).localname,
            created=xs_datetime(NAME, "nachrichtenkopf/erstellungszeitpunkt",
                                text(child(head, "erstellungszeitpunkt"))),
            author=_party(path(head, "absender", "informationen")),
            readers=(reader,) if reader else (),
            standard="XJustiz",
            version=head.get("xjustizVersion") if head is not None else None,
            test=False,
            profile=NAME,
            root=root.tag,
            process_id=text(path(head, "nachrichtenuebergreifenderProzess", "prozessID")),
        )


PROFILE = XJustizProfile()
