"""Profile: NeTEx ``PublicationDelivery`` (namespace ``http://www.netex.org.uk/netex``).

Spec: CEN NeTEx (EN 16614), ``NeTEx_publication.xsd``; the delivery header follows SIRI
(EN 15531) conventions::

    <PublicationDelivery version="..">
      <PublicationTimestamp/> <ParticipantRef/>
      [<PublicationRequest> <RequestTimestamp/> <ParticipantRef/> ...]
      [<PublicationRefreshInterval/>] [<Description/>] <dataObjects/>

NeTEx has no message ID: message_id is ``ParticipantRef/PublicationTimestamp`` as sent, which
identifies one publication of one participant. author = the publishing ``ParticipantRef``;
readers = the requesting participant of ``PublicationRequest``, if any. version = the root's
``version`` attribute; message_type ``PublicationDelivery``; no test flag.
"""

from __future__ import annotations

from lxml import etree

from xoev._header import MessageHeader, Party
from xoev._profiles._util import child, path, required, text, xs_datetime

NAMESPACE = "http://www.netex.org.uk/netex"
NAME = "netex-publication"
_ROOT = f"{{{NAMESPACE}}}PublicationDelivery"


class NetexProfile:
    name = NAME

    def matches(self, root: etree._Element) -> bool:
        return root.tag == _ROOT

    def read(self, root: etree._Element) -> MessageHeader:
        stamp = required(NAME, "PublicationDelivery/PublicationTimestamp",
                         text(child(root, "PublicationTimestamp")))
        participant = required(NAME, "PublicationDelivery/ParticipantRef",
                               text(child(root, "ParticipantRef")))
        requestor = text(path(root, "PublicationRequest", "ParticipantRef"))
        return MessageHeader(
            message_id=f"{participant}/{stamp}",
            message_type="PublicationDelivery",
            created=xs_datetime(NAME, "PublicationDelivery/PublicationTimestamp", stamp),
            author=Party(None, participant),
            readers=(Party(None, requestor),) if requestor else (),
            standard="NeTEx",
            version=root.get("version"),
            test=False,
            profile=NAME,
            root=root.tag,
        )


PROFILE = NetexProfile()
