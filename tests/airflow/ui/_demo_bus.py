"""Demo data for the browser test, made by the real runtime: a bus, four partners with their own
keystores, sealed envelopes over in-memory transports, the demo documents and schemas kcbus
ships (``kcbus.airflow.demo.documents``, ``schemas/demo``).

The Landratsamt receives through a drop folder that does not exist yet (``create=false``):
its deliveries fail permanently and the messages go DEAD, until the test creates the folder.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import xoev
from adapters.envelope import Keystore, RoutingLabel, seal
from adapters.transport import Outbound, Transport, connect
from kcbus.airflow.demo import documents
from kcbus.bus import Bus
from kcbus.config import load
from kcbus.ledger import Ledger

__all__ = ["DemoBus", "make_demo_bus"]

PROJECT = Path(__file__).resolve().parents[3]
PASSPHRASE = "kcbus-ui-test"
BUS = "kcbus"
GEMEINDE = documents.Office("DVDV", "gemeinde-musterdorf", "Gemeinde Musterdorf")
LRA = documents.Office("DVDV", "lra-musterkreis", "Landratsamt Musterkreis")
KLINIKUM = documents.Office("1.2.276.0.76.4.5", "260812345", "Klinikum Musterkreis")
PRAXIS = documents.Office("1.2.276.0.76.4.5", "260898765", "Hausarztpraxis Dr. Beispiel")
PARTNERS = ("gemeinde-musterdorf", "lra-musterkreis", "klinikum-musterkreis", "praxis-dr-beispiel")

_CONFIG = """\
bus:
  id: kcbus
  name: kcbus Landkreis Musterkreis
  address: {{verzeichnisdienst: DVDV, kennung: "kcbus:musterkreis"}}
  keystore: {keys}/kcbus
  inbound: ["{broker}?inbox=kcbus"]
partners:
  gemeinde-musterdorf:
    name: Gemeinde Musterdorf
    address: {{verzeichnisdienst: DVDV, kennung: gemeinde-musterdorf}}
    deliver_to: {broker}
    may_send: [baugenehmigung.antrag.*]
  lra-musterkreis:
    name: Landratsamt Musterkreis
    address: {{verzeichnisdienst: DVDV, kennung: lra-musterkreis}}
    deliver_to: file://{lra_folder}?create=false
    may_send: [baugenehmigung.formellePruefung.*]
  klinikum-musterkreis:
    name: Klinikum Musterkreis
    address: {{verzeichnisdienst: "1.2.276.0.76.4.5", kennung: "260812345"}}
    deliver_to: {broker}
    may_send: ["18842-5"]
  praxis-dr-beispiel:
    name: Hausarztpraxis Dr. Beispiel
    address: {{verzeichnisdienst: "1.2.276.0.76.4.5", kennung: "260898765"}}
    deliver_to: {broker}
    receipts: []
routes:
  bauantrag:
    match: {{standards: [kcbus-demo-bau], message_types: [baugenehmigung.*]}}
    to: [leser]
    inspection: full
    schemas: [{project}/schemas/demo/bau]
    retry: {{attempts: 3, backoff: 1s, max_backoff: 5s}}
  entlassbrief:
    match: {{standards: [CDA], message_types: ["18842-5"]}}
    to: [leser]
    inspection: end-to-end
"""


@dataclass
class DemoBus:
    bus: Bus
    keystores: dict[str, Keystore]
    lra_folder: Path
    name: str
    _outboxes: dict[str, Transport] = field(default_factory=dict)

    def send(self, partner: str, message: bytes, *, end_to_end_for: str | None = None) -> None:
        """``partner`` seals ``message`` (for the bus, or end-to-end for another partner with a
        routing label for the bus) and drops it into the bus's inbox."""
        now = datetime.now(UTC)
        store = self.keystores[partner]
        if end_to_end_for is None:
            sealed = seal(message, sender=partner, recipient=BUS, keystore=store, now=now)
        else:
            header = xoev.read_header(xoev.parse_xml(message))
            sealed = seal(message, sender=partner, recipient=end_to_end_for, keystore=store,
                          now=now, via=BUS, label=RoutingLabel.from_header(header))
        if partner not in self._outboxes:
            self._outboxes[partner] = connect(f"memory://{self.name}", peer=partner)
        self._outboxes[partner].send(
            Outbound(envelope_id=sealed.envelope_id, recipient=BUS, data=sealed.data())
        )

    def close(self) -> None:
        for outbox in self._outboxes.values():
            outbox.close()
        self.bus.close()


def make_demo_bus(root: Path, ledger: Ledger, *, actor: str) -> DemoBus:
    now = datetime.now(UTC) - timedelta(days=1)
    stores = {p: Keystore(root / "keys" / p, PASSPHRASE) for p in (BUS, *PARTNERS)}
    for party, store in stores.items():
        store.create_identity(party, "modern", now=now)
    for party, store in stores.items():
        public = store.export_public(party)
        for other, other_store in stores.items():
            if other != party:
                other_store.import_public(party, public, now=now)
    name = f"ui{uuid.uuid4().hex[:10]}"
    lra_folder = root / "lra-inbox"
    config_file = root / "kcbus.yaml"
    config_file.write_text(_CONFIG.format(keys=root / "keys", broker=f"memory://{name}",
                                          lra_folder=lra_folder, project=PROJECT))
    config = load(config_file)
    bus = Bus(config, ledger=ledger, keystore=stores[BUS], actor=actor)
    return DemoBus(bus=bus, keystores=stores, lra_folder=lra_folder, name=name)


def bauantrag() -> bytes:
    return documents.bauantrag(
        message_id=str(uuid.uuid4()), created=datetime.now(UTC), author=GEMEINDE, reader=LRA,
        reference=f"BA-{uuid.uuid4().hex[:8]}",
    )


def broken_bauantrag() -> bytes:
    return documents.broken(bauantrag())


def entlassbrief() -> bytes:
    return documents.entlassbrief(
        document_id=str(uuid.uuid4()), set_id=str(uuid.uuid4()), created=datetime.now(UTC),
        hospital=KLINIKUM, practice=PRAXIS, patient_number=4711,
    )
