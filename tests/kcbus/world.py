"""A small world for runtime tests: the bus, its partners, their keys, transports and messages.

Every party has its own keystore (private keys of its own, public keys of the others), so
end-to-end content really is unreadable for the bus. Keys are made once per test session
(scrypt and key generation are the slow part) and copied per test.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import xoev
from adapters.envelope import Keystore, RoutingLabel, open_envelope, seal
from adapters.transport import Outbound, Transport, TransportUnavailable, connect
from kcbus.bus import Bus
from kcbus.config import BusConfig, load
from kcbus.ledger import Ledger
from kcbus.receipts import NAMESPACE as RECEIPT_NS
from kcbus.receipts import Receipt, read_receipt

PROJECT = Path(__file__).resolve().parents[2]
STANDARDS = PROJECT.parent / "shared" / "standards"
XOEV_DATA = PROJECT / "tests" / "xoev" / "data"
DATA = Path(__file__).resolve().parent / "data"
PASSPHRASE = "kcbus-test-passphrase"
BUS = "kcbus"
PARTNERS = ("gemeinde-a", "lra", "klinikum", "praxis")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@dataclass
class Keys:
    """Keystore folders under ``root`` and their unlocked keystores (scrypt is slow: unlock
    once per session; the tests never change keys)."""

    root: Path
    stores: dict[str, Keystore]


def make_keys(root: Path, profile: str = "modern", parties: tuple[str, ...] = (BUS, *PARTNERS)
              ) -> Keys:
    """One keystore folder per party under ``root``; each knows everyone's public keys."""
    stores = {p: Keystore(root / p, PASSPHRASE) for p in parties}
    for party, store in stores.items():
        store.create_identity(party, profile, now=T0 - timedelta(days=1))  # type: ignore[arg-type]
    for party, store in stores.items():
        public = store.export_public(party)
        for other, other_store in stores.items():
            if other != party:
                other_store.import_public(party, public, now=T0 - timedelta(days=1))
    return Keys(root, stores)


CONFIG = """\
bus:
  id: kcbus
  name: kcbus Landkreis Musterkreis
  address: {{verzeichnisdienst: DVDV, kennung: "kcbus:091870000000"}}
  keystore: {keys}
  inbound: ["{inbox}"]
partners:
  gemeinde-a:
    name: Gemeinde Musterdorf
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870120000"}}
    deliver_to: "{to_gemeinde}"
    may_send: [baugenehmigung.*]
    peer: gemeinde-a
  lra:
    name: Landratsamt Musterkreis, Bauaufsicht
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870000000"}}
    deliver_to: "{to_lra}"
    may_send: [baugenehmigung.*, nachricht.gds.*]
  klinikum:
    name: Klinikum Musterstadt
    address: {{verzeichnisdienst: "1.2.276.0.76.4.16", kennung: "999999901"}}
    deliver_to: "{to_klinikum}"
    may_send: ["18842-5"]
  praxis:
    name: Hausarztpraxis Musterdorf
    address: {{verzeichnisdienst: "1.2.276.0.76.4.17", kennung: "999999900"}}
    deliver_to: "{to_praxis}"
routes:
  bauantrag:
    description: Bauanträge der Gemeinden an die untere Bauaufsicht
    match: {{message_types: [baugenehmigung.*]}}
    to: [leser]
    inspection: full
    schemas: [{xbau}]
    retry: {{attempts: 3, backoff: 10s, max_backoff: 1m, jitter: 0.5}}
    retention: 30d
  entlassbrief:
    description: Entlassbriefe Klinikum → Hausarzt, Ende-zu-Ende
    match: {{standards: [CDA]}}
    to: [leser]
    inspection: end-to-end
    retention: 90d
  justiz:
    match: {{message_types: [nachricht.gds.*]}}
    to: [lra]
    inspection: full
"""


class Wrapped:
    """A real transport with some of its calls changed by a test (an outage, a refusal, a
    crash point, a file swapped under the bus); everything else goes to ``inner``, and
    ``send_many`` goes through the (maybe changed) ``send``."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def send_many(self, items: list[Outbound]) -> None:
        for item in items:
            self.send(item)

    def send(self, item: Outbound) -> None:
        self.inner.send(item)


class Outage(Wrapped):
    """A partner's real (in-memory) transport behind a link that is down for the first
    ``failures`` sends: the error the transport itself raises when its peer is gone."""

    def __init__(self, inner: Transport, failures: int, endpoint: str) -> None:
        super().__init__(inner)
        self.failures = failures
        self.endpoint = endpoint

    def send(self, item: Outbound) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise TransportUnavailable(
                "connection refused", transport="memory", endpoint=self.endpoint
            )
        self.inner.send(item)


def outage(world: World, partner: str, failures: int) -> Outage:
    """Put ``partner``'s transport in the bus behind an :class:`Outage`."""
    down = Outage(world.bus.runtime.transport(partner), failures, partner)
    world.bus.runtime.transports[partner] = down  # type: ignore[assignment]
    return down


@dataclass
class World:
    """The bus and its partners in one test; ``now`` moves only when a test moves it."""

    root: Path
    name: str
    config: BusConfig
    bus: Bus
    keystores: dict[str, Keystore]
    now: datetime = T0
    partner_transports: dict[str, Transport] = field(default_factory=dict)

    def clock(self) -> datetime:
        return self.now

    # -- partner side -----------------------------------------------------------------------

    def outbox(self, partner: str) -> Transport:
        key = f"out:{partner}"
        if key not in self.partner_transports:
            self.partner_transports[key] = connect(f"memory://{self.name}", peer=partner)
        return self.partner_transports[key]

    def inbox(self, partner: str) -> Transport:
        key = f"in:{partner}"
        if key not in self.partner_transports:
            self.partner_transports[key] = connect(f"memory://{self.name}?inbox={partner}")
        return self.partner_transports[key]

    def send(
        self,
        partner: str,
        message: bytes,
        *,
        end_to_end_for: str | None = None,
        tamper: bool = False,
        envelope_id: str | None = None,
    ) -> str:
        """Seal ``message`` as ``partner`` (for the bus, or end-to-end for a partner with a
        routing label for the bus) and drop it into the bus's inbox; returns the envelope ID."""
        envelope_id, data = self.seal(
            partner, message, end_to_end_for=end_to_end_for, envelope_id=envelope_id
        )
        if tamper:  # one base64url character of the JWE ciphertext replaced by another
            parts = data.split(b".")
            ciphertext = bytearray(parts[3])
            middle = len(ciphertext) // 2
            ciphertext[middle] = ord("B") if ciphertext[middle] == ord("A") else ord("A")
            parts[3] = bytes(ciphertext)
            data = b".".join(parts)
        self.outbox(partner).send(Outbound(envelope_id=envelope_id, recipient=BUS, data=data))
        return envelope_id

    def seal(
        self,
        partner: str,
        message: bytes,
        *,
        end_to_end_for: str | None = None,
        envelope_id: str | None = None,
    ) -> tuple[str, bytes]:
        store = self.keystores[partner]
        if end_to_end_for is None:
            sealed = seal(message, sender=partner, recipient=BUS, keystore=store, now=self.now,
                          envelope_id=envelope_id)
        else:
            header = xoev.read_header(xoev.parse_xml(message))
            sealed = seal(message, sender=partner, recipient=end_to_end_for, keystore=store,
                          now=self.now, via=BUS, label=RoutingLabel.from_header(header),
                          envelope_id=envelope_id)
        return sealed.envelope_id, sealed.data()

    def collect(self, partner: str) -> tuple[list[bytes], list[Receipt]]:
        """Everything delivered to ``partner``: opened messages and read receipts."""
        inbox = self.inbox(partner)
        messages: list[bytes] = []
        receipts: list[Receipt] = []
        while deliveries := inbox.receive(100):
            for delivery in deliveries:
                opened = open_envelope(delivery.read(), keystore=self.keystores[partner],
                                       now=self.now, replay_guard=None)
                root = xoev.parse_xml(opened.message).getroot()
                if opened.sender == BUS and root.tag.startswith(f"{{{RECEIPT_NS}}}"):
                    receipts.append(read_receipt(opened.message))
                else:
                    messages.append(opened.message)
                inbox.acknowledge(delivery)
        return messages, receipts

    def close(self) -> None:
        for transport in self.partner_transports.values():
            transport.close()
        self.bus.close()


def write_config(root: Path, keys: Path, *, broker: str, lra: str | None = None,
                 folders: Path | None = None) -> Path:
    """The test config: every party on the ``memory://`` broker, or with ``folders`` on file
    drops (``<folders>/<party>``) that work across processes."""
    def url(party: str) -> str:
        return f"file://{folders / party}" if folders is not None else broker

    path = root / "kcbus.yaml"
    path.write_text(
        CONFIG.format(
            keys=keys / BUS,
            inbox=url(BUS) if folders is not None else f"{broker}?inbox={BUS}",
            to_gemeinde=url("gemeinde-a"),
            to_lra=lra or url("lra"),
            to_klinikum=url("klinikum"),
            to_praxis=url("praxis"),
            xbau=STANDARDS / "xbau-2.6" / "complete",
        )
    )
    return path


def make_world(root: Path, keys: Keys, ledger_url: str | None = None, *,
               lra: str | None = None) -> World:
    name = f"w{uuid.uuid4().hex[:12]}"
    root.mkdir(parents=True, exist_ok=True)
    lra = lra.format(name=name) if lra else None
    config = load(write_config(root, keys.root, broker=f"memory://{name}", lra=lra))
    world_holder: list[World] = []

    def clock() -> datetime:
        return world_holder[0].now

    ledger = Ledger(ledger_url or f"sqlite:///{root / 'ledger.sqlite'}")
    bus = Bus(config, ledger=ledger, keystore=keys.stores[BUS], clock=clock,
              actor="test-worker")
    world = World(
        root=root, name=name, config=config, bus=bus,
        keystores={p: keys.stores[p] for p in PARTNERS},
    )
    world_holder.append(world)
    return world


# -- messages -------------------------------------------------------------------------------

def xbau_antrag(*, message_uuid: str | None = None, test: bool = False,
                reader: str = "bau:091870000000", drop: str | None = None) -> bytes:
    """The synthetic XBau 2.6 Bauantrag of the xoev tests, with a fresh UUID (or the given
    one), optionally flagged test, addressed to another reader, or with an element dropped."""
    text = (XOEV_DATA / "xbau-baugenehmigung-antrag-0200.xml").read_text(encoding="utf-8")
    text = text.replace("6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6", message_uuid or str(uuid.uuid4()))
    if test:
        text = text.replace('version="2.6">', 'version="2.6" test="true">', 1)
    text = text.replace("<kennung>bau:091870000000</kennung>", f"<kennung>{reader}</kennung>", 1)
    if drop is not None:
        start = text.index(f"<{drop}>")
        end = text.index(f"</{drop}>") + len(f"</{drop}>")
        text = text[:start] + text[end:]
    return text.encode()


def plans_file(path: Path, size: int) -> str:
    """A building plan of ``size`` bytes (whole MiB) at ``path``, its SHA-256 returned. Each
    MiB starts with its number, so no two chunks are alike (a chunk moved or repeated shows)."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for n in range(size >> 20):
            piece = n.to_bytes(8, "big") + block[8:]
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def sha256_of(source: Path | BinaryIO) -> str:
    """SHA-256 of a file or a stream (read in 1 MiB pieces: these are the large ones)."""
    if isinstance(source, Path):
        with source.open("rb") as stream:
            return sha256_of(stream)
    digest = hashlib.sha256()
    while chunk := source.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def bauantrag_with_plans(
    world: World, folder: Path, plan_bytes: int, *, name: str | None = None
) -> tuple[str, Path]:
    """A Bauantrag sealed by gemeinde-a for the bus with a ``plan_bytes`` plan attached, saved
    in ``folder`` as ``name`` (default ``<envelope id>.env``; ``save`` writes a dot-file and
    renames it, so a drop folder sees only the complete envelope). The plan is made beside
    ``folder`` and removed."""
    plans = folder.parent / "bauplaene.pdf"
    plans_file(plans, plan_bytes)
    sealed = seal(xbau_antrag(), sender="gemeinde-a", recipient=BUS,
                  keystore=world.keystores["gemeinde-a"], now=world.now, attachments=[plans])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{sealed.envelope_id}.env")
    sealed.save(path)
    plans.unlink()
    return sealed.envelope_id, path


def entlassbrief() -> bytes:
    text = (XOEV_DATA / "cda-entlassbrief.xml").read_text(encoding="utf-8")
    return text.replace("EB-2026-000417", f"EB-{uuid.uuid4().hex[:10]}").encode()


def xjustiz() -> bytes:
    text = (XOEV_DATA / "xjustiz-basisnachricht-0005006.xml").read_text(encoding="utf-8")
    return text.replace("5d6e7f80-1a2b-4c3d-8e4f-5a6b7c8d9e0f", str(uuid.uuid4())).encode()


def dedent(text: str) -> str:
    return textwrap.dedent(text)
