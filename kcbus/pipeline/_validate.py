"""Stage *validate*: OPENED → VALIDATED (Eingangsbestätigung), or REJECTED (Rückweisung).

Full inspection: the document is validated against the route's schema packages with libxml2
(:meth:`xoev.SchemaRegistry.validate`, compiled once per process and route), then, if the route
names code-list folders, its ``xoev-code:Code`` values are checked (XÖV code-list types 1-4;
lists that are not loaded are recorded as not checked, never passed silently). Every schema
error becomes one fault of the Rückweisung with its line and XPath.

End-to-end: the bus cannot read the content; it records that validation is the recipient's
and accepts on the strength of the verified sender and routing label.
"""

from __future__ import annotations

from lxml import etree

from kcbus._errors import CodeInvalid, SchemaInvalid
from kcbus.config import Route
from kcbus.ledger import MessageRow, Status, Unit
from kcbus.pipeline._common import (
    ReceiptQueue,
    StageCounts,
    fault_of,
    reference_of,
    reject,
    retry_later,
    with_fields,
)
from kcbus.pipeline._runtime import Runtime, work
from kcbus.receipts import Fault, ReceiptType, redact
from xoev import ConfigurationError, PartnerFault, parse_xml

__all__ = ["validate_batch", "validate_rows"]

_STAGE = "validate"
_MAX_FAULTS = 20  # a Rückweisung lists at most this many schema errors


def validate_batch(rt: Runtime, limit: int, *, unit: Unit | None = None) -> StageCounts:
    """Claim up to ``limit`` OPENED messages and validate them."""
    with work(rt, unit) as unit:
        rows = unit.claim([Status.OPENED], limit)
        return validate_rows(rt, unit, rows)[0]


def validate_rows(
    rt: Runtime, unit: Unit, rows: list[MessageRow]
) -> tuple[StageCounts, list[MessageRow]]:
    """Validate ``rows`` (OPENED, claimed in ``unit``); gives the counts and the rows now
    VALIDATED."""
    counts = StageCounts()
    advanced: list[MessageRow] = []
    if rows:
        need_content = [
            r.ledger_id for r in rows if not r.end_to_end and r.ledger_id not in rt.trees
        ]
        contents = unit.blobs("content", need_content)
        receipts = ReceiptQueue(rt)
        for row in rows:
            sender = rt.partner(row.sender)
            route = rt.route(row.route)
            tree = rt.trees.pop(row.ledger_id, None)
            if route is None:  # the route was removed from the config since the open stage
                retry_later(
                    rt,
                    unit,
                    row,
                    _STAGE,
                    ConfigurationError(f"route {row.route} is no longer configured"),
                    counts,
                )
                continue
            detail = "content sealed for the recipient: validated there"
            if not row.end_to_end:
                try:
                    if tree is None:
                        tree = parse_xml(contents[row.ledger_id])
                    faults, detail = _check(rt, route, tree)
                except PartnerFault as exc:
                    faults = [fault_of(exc)]
                except ConfigurationError as exc:
                    retry_later(rt, unit, row, _STAGE, exc, counts)
                    continue
                if faults:
                    reject(rt, unit, row, _STAGE, faults, receipts, counts, sender=sender)
                    continue
            changes: dict[str, object] = {
                "status": Status.VALIDATED,
                "attempts": 0,
                "next_attempt_at": None,
                "reason_code": None,
                "reason": None,
            }
            unit.update(row.ledger_id, **changes)
            advanced.append(with_fields(row, changes))
            unit.event(row.ledger_id, _STAGE, Status.VALIDATED, detail=detail)
            counts.validated += 1
            receipts.add(
                row,
                sender,
                ReceiptType.ACCEPTED,
                reference=reference_of(row),
                test=row.test,
                unit=unit,
            )
        counts.receipts += receipts.flush(unit)
    # Trees of messages another worker validated would otherwise stay here for good.
    rt.trees.clear()
    return counts, advanced


def _check(rt: Runtime, route: Route, tree: etree._ElementTree) -> tuple[list[Fault], str]:
    if not route.schemas:
        return [], "route has no schema package: not validated"
    registry = rt.registry(route)
    result = registry.validate(tree)
    if not result.valid:
        faults = []
        for issue in result.errors[:_MAX_FAULTS]:
            exc = SchemaInvalid(redact(issue.message), line=issue.line, xpath=issue.path)
            faults.append(fault_of(exc))
        return faults, ""
    detail = f"valid against {result.package} ({result.engine})"
    lists = rt.codelists(route)
    if lists is not None:
        report = lists.check(tree, registry=registry)
        if report.issues:
            return [
                fault_of(CodeInvalid(redact(i.message), line=i.line, xpath=i.path))
                for i in report.issues[:_MAX_FAULTS]
            ], ""
        detail += f"; {report.checked} codes checked"
        if report.not_checked:
            missing = ", ".join(f"{uri} {version or '?'}" for uri, version in report.not_checked)
            detail += f"; lists not loaded, not checked: {missing}"
    return [], detail
