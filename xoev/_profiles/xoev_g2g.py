"""Profile: XÖV basisnachricht ``nachrichtenkopf.g2g`` 1.1 (qualified and unqualified).

Spec: ``xoev-basisnachricht-g2g_1.1.xsd`` (namespace ``http://xoev.de/schemata/basisnachricht/
g2g/1_1``, elementFormDefault qualified, party type ``bn-beh:BehoerdeType`` from
``xoev-basisnachricht-behoerde_1.1.xsd``) and ``xoev-basisnachricht-unqualified-g2g_1.1.xsd``
(all local elements unqualified). Standards restrict ``Nachricht.G2GType``; XBau 2.6 uses the
unqualified variant (``xbau:Nachricht.G2G``).

Layout (the root element is the message; its first child is the head)::

    <root produkt=.. produkthersteller=.. standard=.. version=.. [test=..]>
      <nachrichtenkopf.g2g>
        <identifikation.nachricht>
          <nachrichtenUUID/> <nachrichtentyp><code/></nachrichtentyp> <erstellungszeitpunkt/>
        </identifikation.nachricht>
        <leser>  <verzeichnisdienst><code/></verzeichnisdienst> <kennung/> <name/> </leser>
        <autor>  ...same... </autor>

Mapping: message_id = nachrichtenUUID; message_type = the root's local name when it has the
XÖV ``<process>.<message>.<number>`` form, else the ``nachrichtentyp`` code; test = the
``test`` attribute is ``true`` or ``1`` (xs:boolean lexical space).
"""

from __future__ import annotations

import re

from lxml import etree

from xoev._header import MessageHeader, Party
from xoev._profiles._util import child, code, path, required, text, xs_datetime

QUALIFIED_NS = "http://xoev.de/schemata/basisnachricht/g2g/1_1"
_MESSAGE_NAME = re.compile(r"[A-Za-z][\w-]*\.[A-Za-z][\w.-]*\.\d{3,7}")
_HEAD = "nachrichtenkopf.g2g"


def _party(element: etree._Element | None) -> Party | None:
    if element is None:
        return None
    kennung = text(child(element, "kennung"))
    if kennung is None:
        return None
    return Party(code(child(element, "verzeichnisdienst")), kennung, text(child(element, "name")))


class XoevG2GProfile:
    """Reads ``nachrichtenkopf.g2g``; ``qualified`` selects which of the two variants."""

    def __init__(self, *, qualified: bool) -> None:
        self._head_ns = QUALIFIED_NS if qualified else None
        self.name = "xoev-g2g-1.1" if qualified else "xoev-g2g-1.1-unqualified"

    def matches(self, root: etree._Element) -> bool:
        for element in root.iterchildren(tag=etree.Element):
            qname = etree.QName(element)
            return qname.localname == _HEAD and qname.namespace == self._head_ns
        return False

    def read(self, root: etree._Element) -> MessageHeader:
        head = child(root, _HEAD)
        ident = child(head, "identifikation.nachricht")
        where = f"{_HEAD}/identifikation.nachricht"
        message_id = required(self.name, f"{where}/nachrichtenUUID",
                              text(child(ident, "nachrichtenUUID")))
        local = etree.QName(root).localname
        type_code = code(child(ident, "nachrichtentyp"))
        message_type = local if _MESSAGE_NAME.fullmatch(local) else type_code
        created = xs_datetime(self.name, f"{where}/erstellungszeitpunkt",
                              text(child(ident, "erstellungszeitpunkt")))
        leser = _party(path(head, "leser"))
        test = (root.get("test") or "").strip().lower() in ("true", "1")
        return MessageHeader(
            message_id=message_id,
            message_type=message_type,
            created=created,
            author=_party(child(head, "autor")),
            readers=(leser,) if leser else (),
            standard=root.get("standard"),
            version=root.get("version"),
            test=test,
            profile=self.name,
            root=root.tag,
        )


QUALIFIED = XoevG2GProfile(qualified=True)
UNQUALIFIED = XoevG2GProfile(qualified=False)
