"""What every stage needs, built once per process: config, ledger, keys, schemas, transports.

Invariants: compiled schemas (per route), code lists, parsed keys and open transport
connections are cached here for the life of the process, so a batch pays none of their setup.
Time comes from ``clock`` and randomness (retry jitter) from ``rng`` so tests can fix both.
The actor recorded with every event is this worker (``kcbus@host:pid`` unless given).
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from lxml import etree

from adapters.envelope import Keystore
from adapters.transport import Transport, connect
from kcbus import __version__
from kcbus._errors import ConfigError
from kcbus.config import BusConfig, Partner, RetryPolicy, Route
from kcbus.ledger import Ledger, Unit
from kcbus.receipts import Addressee, ReceiptBuilder
from xoev import CodeLists, SchemaRegistry

__all__ = ["Runtime", "default_actor", "utcnow", "work"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_actor() -> str:
    return f"kcbus@{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    """The shared state of a worker process; stages are functions of it."""

    config: BusConfig
    ledger: Ledger
    keystore: Keystore
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    actor: str = field(default_factory=default_actor)
    #: Transports by partner ID that override ``deliver_to`` (e.g. built from Airflow
    #: Connections); others are opened from the partner's URL on first use.
    transports: dict[str, Transport] = field(default_factory=dict)
    #: Extra options for ``adapters.transport.connect`` per partner ID.
    transport_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: Scratch space for envelope attachments while they are opened and re-sealed.
    scratch: Path | None = None

    _registries: dict[str, SchemaRegistry] = field(default_factory=dict, init=False)
    _codelists: dict[str, CodeLists | None] = field(default_factory=dict, init=False)
    _opened: dict[str, Transport] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    #: Parsed documents handed from the open stage to the validate stage in this process
    #: (by ledger ID); a worker that did not open a message parses it again.
    trees: dict[int, etree._ElementTree] = field(default_factory=dict, init=False)
    _receipts: ReceiptBuilder | None = field(default=None, init=False)
    #: Envelopes this worker sealed and has not sent yet, by (delivery ID, envelope ID): the
    #: deliver stage sends them without reading them back. The envelope ID (random, new per
    #: seal) makes an entry match only the seal the ledger committed; a seal whose unit rolled
    #: back is never matched and ages out. Bounded: see ``keep_sealed``.
    _sealed: dict[tuple[int, str], bytes] = field(default_factory=dict, init=False)
    _sealed_bytes: int = field(default=0, init=False)

    #: Bounds of the in-memory hand-over of sealed envelopes (larger ones are read back).
    SEALED_ITEM_MAX: ClassVar[int] = 1 << 20
    SEALED_TOTAL_MAX: ClassVar[int] = 64 << 20

    def now(self) -> datetime:
        return self.clock()

    # -- partners and routes ----------------------------------------------------------------

    def partner(self, partner_id: str | None) -> Partner | None:
        return None if partner_id is None else self.config.partners.get(partner_id)

    def route(self, name: str | None) -> Route | None:
        return None if name is None else self.config.routes.get(name)

    def retry_policy(self, route_name: str | None) -> RetryPolicy:
        route = self.route(route_name)
        return route.retry if route is not None else RetryPolicy()

    # -- schemas ----------------------------------------------------------------------------

    def registry(self, route: Route) -> SchemaRegistry:
        with self._lock:
            registry = self._registries.get(route.name)
            if registry is None:
                registry = SchemaRegistry.from_dirs(list(route.schemas))
                self._registries[route.name] = registry
            return registry

    def codelists(self, route: Route) -> CodeLists | None:
        with self._lock:
            if route.name not in self._codelists:
                lists: CodeLists | None = None
                if route.codelists:
                    merged = [cl for d in route.codelists for cl in CodeLists.from_dir(d)]
                    lists = CodeLists(merged)
                self._codelists[route.name] = lists
            return self._codelists[route.name]

    # -- receipts ---------------------------------------------------------------------------

    @property
    def receipts(self) -> ReceiptBuilder:
        if self._receipts is None:
            bus = self.config.bus
            self._receipts = ReceiptBuilder(
                Addressee(bus.address.verzeichnisdienst, bus.address.kennung, bus.name),
                product=bus.product,
                vendor=bus.vendor,
                product_version=__version__,
            )
        return self._receipts

    def addressee(self, partner: Partner) -> Addressee:
        """A partner as ``leser`` of a receipt; partners without an XÖV address get their
        registry ID under the directory ``kcbus``."""
        if partner.address is not None:
            return Addressee(
                partner.address.verzeichnisdienst, partner.address.kennung, partner.name
            )
        return Addressee("kcbus", partner.id, partner.name)

    # -- sealed envelopes between seal and deliver -------------------------------------------

    def keep_sealed(self, delivery_id: int, envelope_id: str, data: bytes) -> None:
        if len(data) > self.SEALED_ITEM_MAX:
            return
        with self._lock:
            while self._sealed and self._sealed_bytes + len(data) > self.SEALED_TOTAL_MAX:
                oldest = next(iter(self._sealed))  # dicts keep insertion order
                self._sealed_bytes -= len(self._sealed.pop(oldest))
            previous = self._sealed.pop((delivery_id, envelope_id), None)
            if previous is not None:
                self._sealed_bytes -= len(previous)
            self._sealed[(delivery_id, envelope_id)] = data
            self._sealed_bytes += len(data)

    def take_sealed(self, delivery_id: int, envelope_id: str | None) -> bytes | None:
        """The envelope kept for this delivery if it is the one the ledger names."""
        if envelope_id is None:
            return None
        with self._lock:
            data = self._sealed.pop((delivery_id, envelope_id), None)
            if data is not None:
                self._sealed_bytes -= len(data)
            return data

    # -- transports -------------------------------------------------------------------------

    def transport(self, partner_id: str) -> Transport:
        given = self.transports.get(partner_id)
        if given is not None:
            return given
        with self._lock:
            opened = self._opened.get(partner_id)
            if opened is None:
                partner = self.config.partners.get(partner_id)
                if partner is None or partner.deliver_to is None:
                    raise ConfigError(
                        self.config.source, None, f"partners.{partner_id}.deliver_to", "missing"
                    )
                options = dict(self.transport_options.get(partner_id, {}))
                opened = connect(partner.deliver_to, **options)
                self._opened[partner_id] = opened
            return opened

    def close(self) -> None:
        """Close the transports this runtime opened (not the ones it was given)."""
        with self._lock:
            for transport in self._opened.values():
                transport.close()
            self._opened.clear()


@contextmanager
def work(rt: Runtime, unit: Unit | None) -> Iterator[Unit]:
    """The unit a stage runs in: the caller's (several stages, one transaction), or its own."""
    if unit is not None:
        yield unit
        return
    with rt.ledger.unit(actor=rt.actor, now=rt.now()) as own:
        yield own
