"""The demo partners: their keys, and sending and receiving through the real adapters.

Each party has its own keystore folder — the bus's is ``bus.keystore`` of the route config,
each partner's ``<keys_root>/<partner>`` — holding its own private keys and the others' public
keys, so end-to-end content really is unreadable for the bus. A partner sends where the config
says the bus receives from it (``receive_from``, else the shared ``bus.inbound``) and receives
where the bus delivers to it (``deliver_to``). Nothing here imports Airflow.

Invariant: what :class:`DemoWorld` records about traffic (envelope IDs, times, receipt types)
holds no content; opened messages are checked and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.envelope import Keystore, RoutingLabel, open_envelope, seal
from adapters.transport import Outbound, Transport, connect
from kcbus.airflow.demo.documents import Office
from kcbus.config import BusConfig
from kcbus.receipts import NAMESPACE as RECEIPT_NS
from kcbus.receipts import read_receipt
from xoev import ConfigurationError, parse_xml, read_header

__all__ = ["Arrival", "DemoWorld", "Sent"]

#: Schemes whose URL selects a receiving queue with ``inbox=<partner>``.
_QUEUED = ("memory", "amqp", "amqps", "kombu+memory", "kombu+filesystem")


@dataclass(frozen=True)
class Sent:
    """One envelope a demo partner handed to its transport."""

    sender: str
    envelope_id: str
    message_id: str
    flow: str
    at: float  # time.time() when the transport took it
    size: int


@dataclass(frozen=True)
class Arrival:
    """One envelope a demo partner received and opened (content already dropped)."""

    recipient: str
    sender: str
    envelope_id: str
    at: float
    #: ``None`` for a message, else the receipt type (Eingangsbestaetigung, ...).
    receipt: str | None
    #: The message ID of the message (or of the one the receipt is about).
    message_id: str | None
    attachments: int = 0


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def _inbox_param(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("inbox")


@dataclass
class DemoWorld:
    """The demo partners around one bus config."""

    config: BusConfig
    keys_root: Path
    passphrase: str
    #: Where ``conn://<id>`` endpoints of the config really are (Airflow Connections are the
    #: bus's; the partners are configured with the URL itself).
    connections: Mapping[str, str] = field(default_factory=dict)
    keystores: dict[str, Keystore] = field(default_factory=dict)
    _outboxes: dict[str, Transport] = field(default_factory=dict, repr=False)
    _inboxes: dict[str, Transport] = field(default_factory=dict, repr=False)

    # -- keys -------------------------------------------------------------------------------

    def prepare_keys(self, now: datetime) -> None:
        """Create every party's identity (once) and give everyone everyone's public keys."""
        bus_id = self.config.bus.id
        stores = {bus_id: Keystore(self.config.bus.keystore, self.passphrase)}
        for partner in self.config.partners:
            stores[partner] = Keystore(self.keys_root / partner, self.passphrase)
        created = now - timedelta(days=1)
        for party, store in stores.items():
            if party not in store.partners():
                profile = "modern" if party == bus_id else self.config.partners[party].profile
                store.create_identity(party, profile, now=created)
        for party, store in stores.items():
            public = store.export_public(party)
            for other, other_store in stores.items():
                if other != party:
                    other_store.import_public(party, public, now=created)
        self.keystores = {p: s for p, s in stores.items() if p != bus_id}

    # -- addresses --------------------------------------------------------------------------

    def office(self, partner: str) -> Office:
        p = self.config.partners[partner]
        if p.address is None:
            raise ConfigurationError(f"partner {partner} has no address for the demo documents")
        return Office(p.address.verzeichnisdienst, p.address.kennung, p.name)

    def _send_url(self, partner: str) -> str:
        p = self.config.partners[partner]
        url = p.receive_from or (self.config.bus.inbound[0] if self.config.bus.inbound else None)
        if url is None:
            raise ConfigurationError(f"no inbound endpoint for partner {partner}")
        return url

    def _receive_url(self, partner: str) -> str:
        p = self.config.partners[partner]
        if p.deliver_to is None:
            raise ConfigurationError(f"partner {partner} has no deliver_to")
        if urlsplit(p.deliver_to).scheme.lower() in (*_QUEUED, "conn"):
            return _with_query(p.deliver_to, inbox=partner)
        return p.deliver_to

    def _resolve(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme.lower() != "conn":
            return url
        real = self.connections.get(parts.netloc)
        if real is None:
            raise ConfigurationError(f"no URL for connection {parts.netloc} in the demo")
        return _with_query(real, **dict(parse_qsl(parts.query)))

    def outbox(self, partner: str) -> Transport:
        if partner not in self._outboxes:
            url = self._resolve(self._send_url(partner))
            scheme = urlsplit(url).scheme.lower()
            # The memory twin stands in for an authenticated transport: say who sends.
            self._outboxes[partner] = (
                connect(url, peer=partner) if scheme == "memory" else connect(url)
            )
        return self._outboxes[partner]

    def inbox(self, partner: str) -> Transport:
        if partner not in self._inboxes:
            self._inboxes[partner] = connect(self._resolve(self._receive_url(partner)))
        return self._inboxes[partner]

    # -- traffic ----------------------------------------------------------------------------

    def send(
        self,
        sender: str,
        message: bytes,
        *,
        flow: str,
        now: datetime,
        end_to_end_for: str | None = None,
        attachments: Sequence[Path] = (),
        envelope_id: str | None = None,
    ) -> Sent:
        """Seal ``message`` as ``sender`` (for the bus, or end-to-end for ``end_to_end_for``
        with a routing label for the bus) and hand it to the sender's transport."""
        store = self.keystores[sender]
        header = read_header(parse_xml(message))
        bus_id = self.config.bus.id
        if end_to_end_for is None:
            sealed = seal(message, sender=sender, recipient=bus_id, keystore=store, now=now,
                          attachments=attachments, envelope_id=envelope_id)
        else:
            sealed = seal(message, sender=sender, recipient=end_to_end_for, keystore=store,
                          now=now, via=bus_id, label=RoutingLabel.from_header(header),
                          attachments=attachments, envelope_id=envelope_id)
        recipient = _inbox_param(self._send_url(sender)) or bus_id
        if sealed.is_compact:
            item = Outbound(envelope_id=sealed.envelope_id, recipient=recipient,
                            data=sealed.data())
        else:
            item = Outbound(envelope_id=sealed.envelope_id, recipient=recipient,
                            open=sealed.open, size=sealed.size)
        self.outbox(sender).send(item)
        return Sent(sender=sender, envelope_id=sealed.envelope_id,
                    message_id=header.message_id, flow=flow, at=time.time(), size=sealed.size)

    def collect(self, partner: str, now: datetime, scratch: Path) -> list[Arrival]:
        """Receive, open and acknowledge everything waiting for ``partner``."""
        inbox = self.inbox(partner)
        arrivals: list[Arrival] = []
        bus_id = self.config.bus.id
        while deliveries := inbox.receive(100):
            for delivery in deliveries:
                with delivery.open() as stream:
                    opened = open_envelope(
                        stream, keystore=self.keystores[partner], now=now,
                        replay_guard=None, attachments_dir=scratch,
                    )
                for attachment in opened.attachments:
                    Path(attachment.path).unlink(missing_ok=True)
                receipt_type: str | None = None
                message_id: str | None
                root = parse_xml(opened.message).getroot()
                if opened.sender == bus_id and root.tag.startswith(f"{{{RECEIPT_NS}}}"):
                    receipt = read_receipt(opened.message)
                    receipt_type = str(receipt.type)
                    message_id = receipt.reference.message_uuid
                else:
                    message_id = read_header(parse_xml(opened.message)).message_id
                arrivals.append(
                    Arrival(recipient=partner, sender=opened.sender,
                            envelope_id=opened.envelope_id, at=time.time(),
                            receipt=receipt_type, message_id=message_id,
                            attachments=len(opened.attachments))
                )
                inbox.acknowledge(delivery)
        return arrivals

    def close(self) -> None:
        for transport in (*self._outboxes.values(), *self._inboxes.values()):
            transport.close()
        self._outboxes.clear()
        self._inboxes.clear()
