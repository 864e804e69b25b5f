"""``Bus``: the runtime's face for Airflow tasks, the demo and tests.

Every method works on batches and returns counts (never content), so an Airflow task is one
call and its XCom one small dict::

    bus = Bus.open("config/", ledger_url=...)          # once per worker process
    bus.receive_batch(inbox, max_items=500)             # transport → ledger (then ack)
    bus.process_pending(limit=500)                      # open, validate, route, seal
    for partner in bus.due_destinations():              # map over destinations
        bus.deliver_pending(partner, limit=500)         # seal + send + receipts
    bus.drain()                                         # all of the above until idle

Calls are idempotent and safe to run concurrently in several processes (the ledger's claims
keep batches disjoint).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from adapters.envelope import Keystore, PassphraseSource
from adapters.transport import Transport, connect
from kcbus.config import BusConfig, load
from kcbus.ledger import Ledger, Unit
from kcbus.pipeline import (
    Runtime,
    StageCounts,
    default_actor,
    deliver_batch,
    open_rows,
    receive_batch,
    route_batch,
    route_rows,
    seal_batch,
    seal_new,
    utcnow,
    validate_batch,
    validate_rows,
)

__all__ = ["Bus", "StageCounts"]


class Bus:
    """One worker's view of the bus: config, ledger, keystore, transports."""

    def __init__(
        self,
        config: BusConfig,
        *,
        ledger: Ledger,
        keystore: Keystore,
        clock: Callable[[], datetime] = utcnow,
        actor: str | None = None,
        transports: Mapping[str, Transport] | None = None,
        transport_options: Mapping[str, Mapping[str, object]] | None = None,
        rng: random.Random | None = None,
        scratch: Path | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.runtime = Runtime(
            config=config,
            ledger=ledger,
            keystore=keystore,
            clock=clock,
            rng=rng or random.Random(),
            actor=actor or default_actor(),
            transports=dict(transports or {}),
            transport_options=transport_options or {},
            scratch=scratch,
        )
        self._inboxes: dict[str, Transport] = {}

    @classmethod
    def open(
        cls,
        config: Path | str | BusConfig,
        *,
        ledger_url: str | None = None,
        passphrase: PassphraseSource = None,
        **kwargs: object,
    ) -> Bus:
        """Load the config, open its ledger (``ledger_url`` > config > ``KCBUS_LEDGER`` >
        ``var/``) and keystore (passphrase: argument > ``KCBUS_KEYSTORE_PASSPHRASE``)."""
        loaded = config if isinstance(config, BusConfig) else load(config)
        url = ledger_url or loaded.bus.ledger or os.environ.get("KCBUS_LEDGER")
        ledger = Ledger(url)
        keystore = Keystore(loaded.bus.keystore, passphrase)
        return cls(loaded, ledger=ledger, keystore=keystore, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        for inbox in self._inboxes.values():
            inbox.close()
        self._inboxes.clear()
        self.runtime.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- stages -----------------------------------------------------------------------------

    def receive_batch(
        self,
        transport: Transport,
        max_items: int = 500,
        *,
        timeout: float = 0.0,
        source: str | None = None,
    ) -> int:
        """Take up to ``max_items`` envelopes from ``transport`` into the ledger; returns how
        many were new (redeliveries are acknowledged and not counted)."""
        return receive_batch(
            self.runtime, transport, max_items, timeout=timeout, source=source
        ).received

    def inbox(self, url: str) -> Transport:
        """The bus's connection to one of its inbound URLs (opened once, reused), limited to
        ``bus.max_inbound_bytes`` per envelope unless the URL sets its own ``?max_bytes=``."""
        transport = self._inboxes.get(url)
        if transport is None:
            if "max_bytes" in dict(parse_qsl(urlsplit(url).query)):
                transport = connect(url)
            else:
                transport = connect(url, max_bytes=self.config.bus.max_inbound_bytes)
            self._inboxes[url] = transport
        return transport

    def receive_all(self, max_items: int = 500) -> int:
        """One batch from every inbound URL of the config."""
        return sum(
            self.receive_batch(self.inbox(url), max_items, source=url)
            for url in self.config.inbound_urls()
        )

    def _unit(self) -> AbstractContextManager[Unit]:
        return self.ledger.unit(actor=self.runtime.actor, now=self.runtime.now())

    def process_pending(self, limit: int = 500) -> StageCounts:
        """One batch through open, validate, route and seal — one transaction for all four
        stages (one commit, content handed on in memory); each stage still records its own
        status change and event."""
        rt = self.runtime
        with self._unit() as unit:
            # What this batch opens goes on to validate and route in memory...
            counts, opened = open_rows(rt, limit, unit=unit)
            more, validated = validate_rows(rt, unit, opened)
            counts += more
            counts += route_rows(rt, unit, validated)
            # ...then whatever earlier runs left half-way...
            counts += validate_batch(rt, limit, unit=unit)
            counts += route_batch(rt, limit, unit=unit)
            # ...and sealing: first what this unit routed and the receipts it wrote (from
            # memory), then what earlier runs left PENDING.
            counts += seal_new(rt, unit)
            counts += seal_batch(rt, limit, unit=unit)
        return counts

    def deliver_pending(self, destination: str | None = None, limit: int = 500) -> int:
        """Seal what waits for ``destination`` (all if ``None``) and send one batch; returns
        the deliveries handed to the transport. Retries that are due go along."""
        return self.deliver_counts(destination, limit).sent

    def deliver_counts(self, destination: str | None = None, limit: int = 500) -> StageCounts:
        """As :meth:`deliver_pending`, with all counts.

        Sealing commits before sending (two transactions): a crash after a send must find
        the envelope that went in the ledger, so a retry sends the same one, never a second,
        differently sealed one."""
        with self._unit() as unit:
            counts = seal_batch(self.runtime, limit, destination, unit=unit)
        with self._unit() as unit:
            counts += deliver_batch(self.runtime, limit, destination, unit=unit)
            # The Zustellbestätigungen (and Rückweisungen) just written are sealed in the same
            # transaction; the next pass sends them.
            counts += seal_new(self.runtime, unit)
        return counts

    def due_destinations(self) -> list[str]:
        return self.ledger.due_destinations(self.runtime.now())

    def drain(
        self, *, limit: int = 500, max_rounds: int = 1000, receive: bool = True
    ) -> StageCounts:
        """Receive (from the config's inbound URLs), process and deliver until nothing moves.

        Retries that are not yet due are left waiting (they do not count as movement)."""
        total = StageCounts()
        for _ in range(max_rounds):
            counts = StageCounts()
            if receive:
                counts.received += self.receive_all(limit)
            counts += self.process_pending(limit)
            counts += self.deliver_counts(None, limit)
            total += counts
            if not counts.progress:
                break
        return total
