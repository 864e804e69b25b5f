"""Stage *route*: VALIDATED → ROUTED (one PENDING delivery per destination), or REJECTED.

Destinations come from the route's ``to``: partner IDs, and ``leser`` = every reader the
header names, looked up by XÖV address (``verzeichnisdienst`` + ``kennung``) in the partner
registry — an unknown reader is a Rückweisung (``unknown-reader``). End-to-end content is sealed
for one final recipient by its sender: that partner must be one the route delivers to.
A message flagged ``test="true"`` never reaches a production recipient (XÖV basisnachricht
g2g 1.1, attribute ``test``): rejected (``test-to-production``).
"""

from __future__ import annotations

from kcbus._errors import TestToProduction, UnknownReader
from kcbus.config import READER, Partner
from kcbus.ledger import MessageRow, Status, Unit
from kcbus.pipeline._common import Facts, ReceiptQueue, StageCounts, fault_of, reject, retry_later
from kcbus.pipeline._runtime import Runtime, work
from xoev import ConfigurationError, PartnerFault

__all__ = ["reader_partner", "route_batch", "route_rows"]

_STAGE = "route"


def route_batch(rt: Runtime, limit: int, *, unit: Unit | None = None) -> StageCounts:
    """Claim up to ``limit`` VALIDATED messages and route them."""
    with work(rt, unit) as unit:
        rows = unit.claim([Status.VALIDATED], limit)
        return route_rows(rt, unit, rows)


def route_rows(rt: Runtime, unit: Unit, rows: list[MessageRow]) -> StageCounts:
    """Route ``rows`` (VALIDATED, claimed in ``unit``): deliveries PENDING, status ROUTED."""
    counts = StageCounts()
    if rows:
        facts = unit.blobs("facts", [r.ledger_id for r in rows])
        receipts = ReceiptQueue(rt)
        planned: list[tuple[MessageRow, list[str]]] = []
        for row in rows:
            try:
                destinations = _destinations(rt, row, Facts.load(facts[row.ledger_id]))
            except PartnerFault as exc:
                reject(
                    rt,
                    unit,
                    row,
                    _STAGE,
                    [fault_of(exc)],
                    receipts,
                    counts,
                    sender=rt.partner(row.sender),
                )
                continue
            except ConfigurationError as exc:
                retry_later(rt, unit, row, _STAGE, exc, counts)
                continue
            planned.append((row, destinations))
        unit.add_deliveries([(row.ledger_id, d) for row, ds in planned for d in ds])
        for row, destinations in planned:
            unit.update(
                row.ledger_id,
                status=Status.ROUTED,
                recipient=",".join(destinations),
                attempts=0,
                next_attempt_at=None,
            )
            unit.event(
                row.ledger_id,
                _STAGE,
                Status.ROUTED,
                detail=f"route {row.route} to {', '.join(destinations)}",
            )
            counts.routed += 1
        counts.receipts += receipts.flush(unit)
    return counts


def _destinations(rt: Runtime, row: MessageRow, facts: Facts) -> list[str]:
    route = rt.route(row.route)
    if route is None:
        raise ConfigurationError(f"route {row.route} is no longer configured")
    found: list[Partner] = []
    for target in route.to:
        if target != READER:
            partner = rt.partner(target)
            if partner is None:
                raise ConfigurationError(f"route {route.name}: partner {target} is gone")
            found.append(partner)
            continue
        for address in facts.readers:
            reader = reader_partner(rt, address)
            if reader is None or (reader.deliver_to is None and reader.id not in rt.transports):
                vd, kennung = _split(address)
                raise UnknownReader(vd, kennung)
            found.append(reader)
    if facts.final_recipient is not None:
        final = rt.partner(facts.final_recipient)
        if final is None or final not in found:
            raise UnknownReader(None, facts.final_recipient)
        found = [final]
    unique = list(dict.fromkeys(p.id for p in found))
    if not unique:
        raise UnknownReader(None, "-")
    if facts.test:
        for pid in unique:
            partner = rt.partner(pid)
            if partner is not None and partner.production:
                raise TestToProduction(pid)
    return unique


def reader_partner(rt: Runtime, address: str) -> Partner | None:
    """The partner a header's reader address (``verzeichnisdienst:kennung``) names."""
    vd, kennung = _split(address)
    return rt.config.partner_by_address(vd, kennung)


def _split(address: str) -> tuple[str | None, str]:
    vd, sep, kennung = address.partition(":")
    return (vd or None, kennung) if sep else (None, address)
