"""The typed partner registry and route table.

Invariants (checked by :func:`kcbus.config.load`, so code using a :class:`BusConfig` may rely on
them): partner IDs and route names are unique; XÖV addresses (``verzeichnisdienst`` +
``kennung``) are unique among partners; every partner named in a route exists; every partner
that is a destination, or that sends and wants receipts, has a ``deliver_to`` URL; every schema
and code-list folder exists. Routes are tried in file order; the first that matches wins.

Endpoint URLs may carry credentials: the ``repr`` of :class:`Partner` and :class:`BusSettings`
(which ends up in logs and tracebacks) shows them redacted (:mod:`kcbus.config._redact`); the
fields themselves hold the real URL the adapters need.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from adapters.transport import DEFAULT_MAX_BYTES
from kcbus.config._redact import redact_urls

__all__ = [
    "READER",
    "Address",
    "BusConfig",
    "BusSettings",
    "Inspection",
    "Partner",
    "Profile",
    "ReceiptKind",
    "RetryPolicy",
    "Route",
    "RouteMatch",
]

Profile = Literal["modern", "fitconnect"]
Inspection = Literal["full", "end-to-end"]
ReceiptKind = Literal["accepted", "rejected", "delivered"]

#: In a route's ``to`` list: "the partner(s) named as ``leser`` in the message header".
READER = "leser"


def _redacted_repr(obj: Partner | BusSettings) -> str:
    """The dataclass ``repr`` with every URL in it redacted."""
    shown = ", ".join(f"{f.name}={getattr(obj, f.name)!r}" for f in fields(obj) if f.repr)
    return redact_urls(f"{type(obj).__name__}({shown})")


@dataclass(frozen=True)
class Address:
    """An XÖV address (``bn-beh:BehoerdeType``): directory service code + ID in that directory."""

    verzeichnisdienst: str
    kennung: str

    def __str__(self) -> str:
        return f"{self.verzeichnisdienst}:{self.kennung}"


@dataclass(frozen=True)
class RetryPolicy:
    """Delivery retries: ``attempts`` in total, exponential backoff with full jitter.

    The n-th retry (n ≥ 1) waits ``min(max_backoff, backoff * multiplier**(n-1))`` scaled by a
    factor drawn uniformly from ``[1 - jitter, 1]`` ("equal/full jitter", AWS architecture blog
    "Exponential Backoff And Jitter"): workers that failed together do not retry together.
    """

    attempts: int = 5
    backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(hours=1)
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> timedelta:
        """Wait before the next attempt, after ``failed_attempts`` (≥ 1) have failed."""
        exponent = max(failed_attempts - 1, 0)
        base = min(
            self.max_backoff.total_seconds(),
            self.backoff.total_seconds() * self.multiplier**exponent,
        )
        factor = 1.0 - self.jitter * (rng or random).random()
        return timedelta(seconds=base * factor)

    def exhausted(self, failed_attempts: int) -> bool:
        return failed_attempts >= self.attempts


@dataclass(frozen=True, repr=False)
class Partner:
    """A system kcbus exchanges messages with (a Behörde, a hospital, a feed)."""

    id: str
    name: str
    address: Address | None = None
    #: Algorithm profile of its keys (``adapters.envelope``); keys live in the keystore.
    profile: Profile = "modern"
    #: Where kcbus delivers to this partner (transport URL), if it receives anything.
    deliver_to: str | None = None
    #: Where kcbus picks up this partner's envelopes, if not from the bus's shared inbox.
    receive_from: str | None = None
    #: Message types it may send (``fnmatch`` patterns: ``baugenehmigung.*``).
    may_send: tuple[str, ...] = ()
    #: A production recipient never receives a message flagged ``test="true"``.
    production: bool = True
    #: Which receipts it gets back for what it sends.
    receipts: frozenset[ReceiptKind] = frozenset({"accepted", "rejected", "delivered"})
    #: Expected authenticated transport identity (mTLS subject, SFTP user), if checked.
    peer: str | None = None
    line: int | None = None

    def __repr__(self) -> str:
        return _redacted_repr(self)

    def may_send_type(self, message_type: str | None) -> bool:
        if message_type is None:
            return False
        return any(fnmatchcase(message_type, pattern) for pattern in self.may_send)


@dataclass(frozen=True)
class RouteMatch:
    """Header facts a message must have to take a route; an empty tuple matches anything."""

    message_types: tuple[str, ...] = ()
    standards: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()

    def matches(
        self,
        *,
        message_type: str | None,
        standard: str | None,
        sender: str,
        readers: Sequence[str],
    ) -> bool:
        if self.message_types and not (
            message_type is not None
            and any(fnmatchcase(message_type, p) for p in self.message_types)
        ):
            return False
        if self.standards and not (
            standard is not None and any(fnmatchcase(standard, p) for p in self.standards)
        ):
            return False
        if self.senders and sender not in self.senders:
            return False
        return not (self.readers and not any(r in self.readers for r in readers))


@dataclass(frozen=True)
class Route:
    """A flow: which messages, to whom, how inspected, validated, retried and kept."""

    name: str
    description: str = ""
    match: RouteMatch = field(default_factory=RouteMatch)
    #: Partner IDs, and/or :data:`READER` for "whoever the header names as leser".
    to: tuple[str, ...] = (READER,)
    inspection: Inspection = "full"
    schemas: tuple[Path, ...] = ()
    codelists: tuple[Path, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How long settled messages stay in the ledger (``None``: forever).
    retention: timedelta | None = None
    #: For the Airflow DAG of this flow: cron expression or preset; ``None``: event-driven.
    schedule: str | None = None
    batch_size: int = 500
    line: int | None = None

    @property
    def end_to_end(self) -> bool:
        return self.inspection == "end-to-end"


@dataclass(frozen=True, repr=False)
class BusSettings:
    """kcbus's own identity and defaults."""

    id: str
    name: str
    address: Address
    keystore: Path
    ledger: str | None = None
    #: Transport URLs where partners drop envelopes for the bus (shared inbox).
    inbound: tuple[str, ...] = ()
    #: Largest envelope the bus reads from any inbound URL (bytes); a URL's own
    #: ``?max_bytes=`` wins. Larger deliveries are parked with ``envelope-too-large``.
    max_inbound_bytes: int = DEFAULT_MAX_BYTES
    product: str = "kcbus"
    vendor: str = "Kompetenzcenter Kommunal Digital"

    def __repr__(self) -> str:
        return _redacted_repr(self)


@dataclass(frozen=True)
class BusConfig:
    """Everything an integration engineer declares; loaded by :func:`kcbus.config.load`."""

    source: Path
    bus: BusSettings
    partners: Mapping[str, Partner]
    routes: Mapping[str, Route]

    def partner(self, partner_id: str) -> Partner | None:
        return self.partners.get(partner_id)

    def partner_by_address(self, verzeichnisdienst: str | None, kennung: str) -> Partner | None:
        """The partner registered under that XÖV address (directory code compared if given)."""
        for partner in self.partners.values():
            address = partner.address
            if address is None or address.kennung != kennung:
                continue
            if verzeichnisdienst is None or address.verzeichnisdienst == verzeichnisdienst:
                return partner
        return None

    def route_for(
        self,
        *,
        message_type: str | None,
        standard: str | None,
        sender: str,
        readers: Sequence[str] = (),
    ) -> Route | None:
        """The first route (file order) whose match fits; ``readers`` are partner IDs."""
        for route in self.routes.values():
            if route.match.matches(
                message_type=message_type, standard=standard, sender=sender, readers=readers
            ):
                return route
        return None

    def inbound_urls(self) -> tuple[str, ...]:
        """Every transport URL the bus receives from: the shared inbox plus per-partner ones."""
        urls = list(self.bus.inbound)
        for partner in self.partners.values():
            if partner.receive_from and partner.receive_from not in urls:
                urls.append(partner.receive_from)
        return tuple(urls)
