"""Stages *seal* and *deliver*, and the acknowledgement that follows a delivery.

Seal (PENDING → SEALED): full inspection and receipts are sealed by the bus for each
destination; the sealed bytes are kept with their envelope ID (as sealed: they are encrypted
for the recipient already, see :mod:`kcbus.ledger._unit`), so every retry of a delivery sends
the *same* envelope and the transport's idempotency by envelope ID holds — a crash between
sending and committing never makes a second, different envelope. For that the seal must be
committed before the send: callers run seal and deliver in separate units. End-to-end content
is forwarded as the sender sealed it (same envelope ID). :func:`seal_new` seals the
deliveries its unit just created (route stage, receipts) from memory; :func:`seal_batch`
claims what earlier runs left PENDING.

The sealed bytes also stay in the worker's memory (:attr:`Runtime.sealed`, keyed by delivery
and envelope ID, bounded) until its deliver stage sends them; a worker that did not seal a
delivery reads it from the ledger.

Large envelopes (above :data:`kcbus.ledger.BLOB_INLINE_MAX`) are never whole in memory: the
stored envelope is re-opened from the ledger's stream (attachments to scratch), the new one is
streamed into a chunked blob (``SealedEnvelope.open()``, encrypted piece by piece in this thread:
the ledger connection is used only here), not kept in :attr:`Runtime.sealed`, and sent with
``Outbound(open=..., size=...)`` straight from the ledger.

Deliver (SEALED/RETRYING due → DELIVERED / RETRYING / DEAD): one ``send`` per delivery inside
the batch's transaction. Whether to retry is decided by the error's type only
(:attr:`xoev.KcbusError.retryable`): transient errors wait ``RetryPolicy.delay`` (exponential
backoff with jitter) until the route's attempts are spent, then DEAD with the last error;
permanent errors (refused by the peer, too large, misconfigured) are DEAD at once. This is the
one place delivery retries live.

A message is DELIVERED when all its deliveries are; then its sender gets a
Zustellbestätigung, once (an operator's resend delivers again but confirms nothing new, see
:func:`_confirm`). When that receipt is delivered the message is ACKNOWLEDGED. Receipts
themselves end DELIVERED.

A message that goes DEAD (a delivery out of retries, refused for good, or impossible to seal)
tells its sender so: a Rückweisung with reason ``delivery-failed`` per dead destination
(the error code, never the transport's own text: it may name another partner's endpoint;
the destination by name only if the sender addressed it, see :func:`_not_delivered`),
written in the same transaction as the DEAD status — unless the sender opted out of
``rejected`` receipts, or the destination had the message before an operator's resend.
Receipts themselves never get one (no receipts about receipts).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from adapters.envelope import Attachment, SealedEnvelope, open_envelope, seal
from adapters.transport import Outbound
from kcbus.ledger import (
    BLOB_INLINE_MAX,
    BlobSource,
    DeliveryRow,
    DeliveryStatus,
    Kind,
    MessageRow,
    Status,
    StoredBlob,
    Unit,
)
from kcbus.pipeline._common import Facts, ReceiptQueue, StageCounts, reference_of
from kcbus.pipeline._route import reader_partner
from kcbus.pipeline._runtime import Runtime, work
from kcbus.receipts import Fault, Handover, ReceiptType, redact
from xoev import KcbusError, TransientFault

__all__ = ["DELIVERY_FAILED", "deliver_batch", "seal_batch", "seal_new"]

#: Reason code of the Rückweisung a sender gets when its message cannot be delivered.
DELIVERY_FAILED = "delivery-failed"


class _Internal(TransientFault):
    """An unexpected error in a transport: retried like a transient one, within the budget."""

    reason_code = "internal"


def seal_batch(
    rt: Runtime, limit: int, destination: str | None = None, *, unit: Unit | None = None
) -> StageCounts:
    """Claim up to ``limit`` PENDING deliveries (to ``destination``, or all) and seal them."""
    with work(rt, unit) as unit:
        pairs = unit.claim_deliveries(
            limit, statuses=[DeliveryStatus.PENDING], destination=destination
        )
        return _seal(rt, unit, pairs)


def seal_new(rt: Runtime, unit: Unit) -> StageCounts:
    """Seal the deliveries ``unit`` created (route stage, receipts), without reading them
    back: their rows are this transaction's own."""
    pairs = []
    missing = []
    for delivery in unit.take_new_deliveries():
        message = unit.current(delivery.message_id)
        if message is None:
            missing.append(delivery)
        else:
            pairs.append((delivery, message))
    if missing:  # not expected (the unit created them); read the messages to be safe
        rows = unit.messages_by_id({d.message_id for d in missing})
        pairs.extend((d, rows[d.message_id]) for d in missing)
    return _seal(rt, unit, pairs)


def _seal(rt: Runtime, unit: Unit, pairs: list[tuple[DeliveryRow, MessageRow]]) -> StageCounts:
    counts = StageCounts()
    bus = rt.config.bus.id
    if pairs:
        receipts = ReceiptQueue(rt)
        full = {m.ledger_id for _, m in pairs if not m.end_to_end}
        contents = unit.blobs("content", full)
        facts = {
            mid: Facts.load(data)
            for mid, data in unit.blobs(
                "facts", [m.ledger_id for _, m in pairs if m.kind is Kind.MESSAGE]
            ).items()
        }
        for delivery, message in pairs:
            if message.end_to_end:
                envelope_id = message.envelope_id
            else:
                try:
                    fact = facts.get(message.ledger_id)
                    data: bytes | None
                    if fact is not None and fact.attachments:
                        data, envelope_id = _reseal_with_attachments(rt, unit, message, delivery)
                    else:
                        sealed = seal(
                            contents[message.ledger_id],
                            sender=bus,
                            recipient=delivery.destination,
                            keystore=rt.keystore,
                            now=unit.now,
                        )
                        data, envelope_id = sealed.data(), sealed.envelope_id
                except KcbusError as exc:  # e.g. no valid key for the destination yet
                    _failed(rt, unit, delivery, message, "seal", exc, counts, receipts)
                    continue
                if data is not None:  # else streamed into the ledger already (large)
                    unit.put_blob(
                        message.ledger_id,
                        "sealed",
                        data,
                        delivery_id=delivery.id,
                        replace=True,
                        encrypt=False,
                    )
                    rt.keep_sealed(delivery.id, envelope_id, data)
            unit.update_delivery(
                delivery.id,
                status=DeliveryStatus.SEALED,
                envelope_id=envelope_id,
                sealed_at=unit.now,
                next_attempt_at=None,
            )
            how = "forwarded as sealed by the sender" if message.end_to_end else "sealed"
            unit.event(
                message.ledger_id,
                "seal",
                None,
                delivery_id=delivery.id,
                detail=f"{how} for {delivery.destination}, envelope {envelope_id}",
            )
            counts.sealed += 1
        counts.receipts += receipts.flush(unit)
    return counts


def _reseal_with_attachments(
    rt: Runtime, unit: Unit, message: MessageRow, delivery: DeliveryRow
) -> tuple[bytes | None, str]:
    """Full inspection with attachments: open the stored envelope again into scratch space
    and seal message + attachments for the destination (plaintext only on local disk, only
    for the moment of sealing). A large result is streamed into the ledger here, while the
    attachments are still in scratch, and ``None`` is returned for its bytes."""
    scratch = Path(tempfile.mkdtemp(prefix="kcbus-seal-", dir=rt.scratch))
    try:
        with unit.open_blob(message.ledger_id, "envelope") as raw:
            opened = open_envelope(
                raw,
                keystore=rt.keystore,
                now=message.received_at,
                replay_guard=None,
                attachments_dir=scratch,
            )
        sealed = seal(
            opened.message,
            sender=rt.config.bus.id,
            recipient=delivery.destination,
            keystore=rt.keystore,
            now=unit.now,
            attachments=[
                Attachment(a.path, a.entry.name, a.entry.media_type) for a in opened.attachments
            ],
        )
        if sealed.size <= BLOB_INLINE_MAX:
            return sealed.data(), sealed.envelope_id
        _store_sealed(unit, message, delivery, sealed)
        return None, sealed.envelope_id
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _store_sealed(
    unit: Unit, message: MessageRow, delivery: DeliveryRow, sealed: SealedEnvelope
) -> None:
    """Stream a sealed envelope into the ledger as sealed, replacing an earlier seal.

    ``open()`` rather than ``write_to``: ``write_to`` writes attachments from a writer thread,
    and the unit's database connection must stay in this one."""
    with sealed.open() as src:
        unit.put_blob_stream(
            message.ledger_id,
            "sealed",
            src,
            delivery_id=delivery.id,
            replace=True,
            encrypt=False,
        )


def _failed(
    rt: Runtime,
    unit: Unit,
    delivery: DeliveryRow,
    message: MessageRow,
    stage: str,
    exc: KcbusError,
    counts: StageCounts,
    receipts: ReceiptQueue | None = None,
) -> None:
    policy = rt.retry_policy(message.route)
    attempts = delivery.attempts + 1
    text = redact(str(exc))
    if exc.retryable and not policy.exhausted(attempts):
        wait = policy.delay(attempts, rt.rng)
        status = DeliveryStatus.RETRYING if stage == "deliver" else DeliveryStatus.PENDING
        unit.update_delivery(
            delivery.id,
            status=status,
            attempts=attempts,
            next_attempt_at=unit.now + wait,
            last_error_code=exc.reason_code,
            last_error=text,
        )
        unit.event(
            message.ledger_id,
            stage,
            DeliveryStatus.RETRYING,
            delivery_id=delivery.id,
            reason_code=exc.reason_code,
            detail=f"to {delivery.destination}: attempt {attempts} failed ({text}); "
            f"next in {int(wait.total_seconds())}s",
        )
        counts.retrying += 1
        return
    why = "retries spent" if exc.retryable else "not retryable"
    unit.update_delivery(
        delivery.id,
        status=DeliveryStatus.DEAD,
        attempts=attempts,
        next_attempt_at=None,
        last_error_code=exc.reason_code,
        last_error=text,
    )
    unit.event(
        message.ledger_id,
        stage,
        DeliveryStatus.DEAD,
        delivery_id=delivery.id,
        reason_code=exc.reason_code,
        detail=f"to {delivery.destination}: {why} after {attempts} attempts: {text}",
    )
    # Seal failures have no later stage to summarise them: decide the message here too.
    if stage == "seal":
        was_dead = (unit.current(message.ledger_id) or message).status is Status.DEAD
        unit.update(
            message.ledger_id,
            status=Status.DEAD,
            reason_code=exc.reason_code,
            reason=text,
            attempts=attempts,
        )
        counts.dead += 1
        if receipts is not None and not was_dead:
            dead = replace(delivery, last_error_code=exc.reason_code)
            _not_delivered(rt, unit, message, [dead], receipts)


def _not_delivered(
    rt: Runtime,
    unit: Unit,
    message: MessageRow,
    dead: list[DeliveryRow],
    receipts: ReceiptQueue,
) -> None:
    """Queue the sender's Rückweisung for a message that went DEAD (none for receipts), one
    fault per delivery in ``dead`` (with its ``last_error_code``).

    The sender learns only what it already knows: a destination it addressed itself (a
    reader of its header, or the partner it sealed end-to-end content for) is named; any
    other — an archive copy, a supervisory office the route adds — is "a further
    destination", without its ID and without a count (who else gets the message, and how
    many, is none of the sender's business; that something failed is: the message is DEAD
    and no Zustellbestätigung will come).

    A destination that had the message before (``delivered_at`` survives an operator's
    resend) gets no fault: the recipient has it, and the sender may already hold a
    Zustellbestätigung that a Rückweisung would contradict. The failed repeat is the
    operator's business (DEAD, with its event); if nothing else failed, no Rückweisung."""
    if message.kind is not Kind.MESSAGE:
        return
    fresh = [d for d in dead if d.delivered_at is None]
    if not fresh:
        return
    addressed = _addressed(rt, unit, message)
    faults = [
        Fault(DELIVERY_FAILED, f"not delivered to {d.destination}: {d.last_error_code or 'error'}")
        for d in fresh
        if d.destination in addressed
    ]
    if any(d.destination not in addressed for d in fresh):
        # One fault for all the others, without their error codes: one per destination
        # would count them, and a code would tell about a partner the sender does not know.
        faults.append(Fault(DELIVERY_FAILED, f"not delivered to {_FURTHER}"))
    receipts.add(
        message,
        rt.partner(message.sender),
        ReceiptType.REJECTED,
        reference=reference_of(message),
        faults=faults,
        test=message.test,
        unit=unit,
    )


def _handovers(
    rt: Runtime, unit: Unit, message: MessageRow, deliveries: list[DeliveryRow]
) -> list[Handover]:
    """The Zustellbestätigung's handovers, under the Rückweisung's rule (see
    :func:`_not_delivered`): destinations the sender addressed are named with their envelope
    IDs; all others together are one "further destination" entry at the latest of their
    times, without ID or count (the schema wants at least one entry). A message with a single
    destination names it: that is the recipient the sender's route sends to."""
    addressed = _addressed(rt, unit, message) if len(deliveries) > 1 else None
    named, further = [], []
    for d in deliveries:
        at = d.delivered_at or unit.now
        if addressed is None or d.destination in addressed:
            named.append(Handover(d.destination, at, d.envelope_id))
        else:
            further.append(at)
    if further:
        named.append(Handover(_FURTHER, max(further)))
    return named


# How a destination the sender did not address appears in its receipts.
_FURTHER = "a further destination"


def _addressed(rt: Runtime, unit: Unit, message: MessageRow) -> set[str]:
    """The partners the sender addressed itself: the readers its header names and, end to
    end, the one it sealed the content for (from the facts the open stage kept; none known
    if they are gone)."""
    data = unit.blobs("facts", [message.ledger_id]).get(message.ledger_id)
    if data is None:
        return set()
    facts = Facts.load(data)
    found = {p.id for a in facts.readers if (p := reader_partner(rt, a)) is not None}
    if facts.final_recipient is not None:
        found.add(facts.final_recipient)
    return found


def deliver_batch(
    rt: Runtime, limit: int, destination: str | None = None, *, unit: Unit | None = None
) -> StageCounts:
    counts = StageCounts()
    with work(rt, unit) as unit:
        pairs = unit.claim_deliveries(
            limit,
            statuses=[DeliveryStatus.SEALED, DeliveryStatus.RETRYING],
            destination=destination,
        )
        if not pairs:
            return counts
        kept = {
            d.id: data
            for d, m in pairs
            if not m.end_to_end and (data := rt.take_sealed(d.id, d.envelope_id)) is not None
        }
        sealed: dict[int, BlobSource] = dict(
            unit.blob_sources(
                "sealed",
                {m.ledger_id for d, m in pairs if not m.end_to_end and d.id not in kept},
                delivery_id=None,
            )
        )
        sealed.update(kept)
        forwarded = unit.blob_sources("content", {m.ledger_id for _, m in pairs if m.end_to_end})
        messages: dict[int, MessageRow] = {}
        by_destination: dict[str, list[tuple[DeliveryRow, MessageRow, Outbound]]] = {}
        for delivery, message in pairs:
            messages[message.ledger_id] = message
            source = forwarded[message.ledger_id] if message.end_to_end else sealed[delivery.id]
            item = _outbound(delivery, source)
            by_destination.setdefault(delivery.destination, []).append((delivery, message, item))
        for target, items in by_destination.items():
            for (delivery, message, item), error in zip(
                items, _send(rt, target, [i for _, _, i in items]), strict=True
            ):
                if error is not None:
                    _failed(rt, unit, delivery, message, "deliver", error, counts)
                    continue
                counts.sent += 1
                unit.update_delivery(
                    delivery.id,
                    status=DeliveryStatus.DELIVERED,
                    attempts=delivery.attempts + 1,
                    delivered_at=unit.now,
                    next_attempt_at=None,
                    last_error_code=None,
                    last_error=None,
                )
                unit.event(
                    message.ledger_id,
                    "deliver",
                    DeliveryStatus.DELIVERED,
                    delivery_id=delivery.id,
                    detail=f"to {delivery.destination}, envelope {item.envelope_id}",
                )
        _summarise(rt, unit, messages, counts)
    return counts


def _outbound(delivery: DeliveryRow, data: BlobSource) -> Outbound:
    """Small envelopes from memory; large ones streamed from the ledger (each ``open`` a fresh
    stream: a transport may re-read for a retry). Sends run inside this unit."""
    envelope_id, recipient = delivery.envelope_id or "", delivery.destination
    if isinstance(data, StoredBlob):
        return Outbound(
            envelope_id=envelope_id, recipient=recipient, open=data.open, size=data.size
        )
    return Outbound(envelope_id=envelope_id, recipient=recipient, data=data)


def _send(rt: Runtime, destination: str, items: list[Outbound]) -> list[KcbusError | None]:
    """Send a destination's batch together (AMQP confirms it in one round trip); if that
    fails, send one by one to learn which failed — sends are idempotent by envelope ID, so
    repeating one that already went is harmless."""
    try:
        transport = rt.transport(destination)
    except KcbusError as exc:
        return [exc] * len(items)
    if len(items) > 1:
        try:
            transport.send_many(items)
            return [None] * len(items)
        except Exception:  # learn per item below
            pass
    outcomes: list[KcbusError | None] = []
    for item in items:
        try:
            transport.send(item)
            outcomes.append(None)
        except KcbusError as exc:
            outcomes.append(exc)
        except Exception as exc:  # a transport bug must not stop the batch
            outcomes.append(_Internal(f"unexpected {type(exc).__name__} in the transport"))
    return outcomes


def _summarise(
    rt: Runtime, unit: Unit, messages: dict[int, MessageRow], counts: StageCounts
) -> None:
    """Set each message's status from all its deliveries; receipts and acknowledgements."""
    receipts = ReceiptQueue(rt)
    parents: list[MessageRow] = []
    delivered: list[tuple[MessageRow, list[DeliveryRow]]] = []
    for message_id, deliveries in unit.deliveries_of(messages).items():
        message = messages[message_id]
        statuses = {d.status for d in deliveries}
        attempts = max(d.attempts for d in deliveries)
        if statuses == {DeliveryStatus.DELIVERED}:
            unit.update(
                message_id,
                status=Status.DELIVERED,
                attempts=attempts,
                next_attempt_at=None,
                reason_code=None,
                reason=None,
            )
            unit.event(
                message_id,
                "deliver",
                Status.DELIVERED,
                detail=f"delivered to {', '.join(d.destination for d in deliveries)}",
            )
            counts.delivered += 1
            if message.kind is Kind.RECEIPT:
                parents.append(message)
            else:
                delivered.append((message, deliveries))
        elif DeliveryStatus.DEAD in statuses:
            dead = next(d for d in deliveries if d.status is DeliveryStatus.DEAD)
            if message.status is not Status.DEAD:
                _not_delivered(
                    rt,
                    unit,
                    message,
                    [d for d in deliveries if d.status is DeliveryStatus.DEAD],
                    receipts,
                )
                unit.update(
                    message_id,
                    status=Status.DEAD,
                    attempts=attempts,
                    next_attempt_at=None,
                    reason_code=dead.last_error_code,
                    reason=dead.last_error,
                )
                unit.event(
                    message_id,
                    "deliver",
                    Status.DEAD,
                    reason_code=dead.last_error_code,
                    detail=f"not delivered to {dead.destination}: {dead.last_error}",
                )
                counts.dead += 1
        elif DeliveryStatus.RETRYING in statuses:
            waiting = [d for d in deliveries if d.status is DeliveryStatus.RETRYING]
            first = min(d.next_attempt_at or unit.now for d in waiting)
            unit.update(
                message_id,
                status=Status.RETRYING,
                attempts=attempts,
                next_attempt_at=first,
                reason_code=waiting[0].last_error_code,
                reason=waiting[0].last_error,
            )
    _confirm(rt, unit, delivered, receipts, counts)
    counts.receipts += receipts.flush(unit)
    _acknowledge(unit, parents, counts)


def _confirm(
    rt: Runtime,
    unit: Unit,
    delivered: list[tuple[MessageRow, list[DeliveryRow]]],
    receipts: ReceiptQueue,
    counts: StageCounts,
) -> None:
    """Queue the Zustellbestätigung of each message that is now DELIVERED, unless its sender
    already has one on its way: an operator's resend delivers the message again, but to the
    sender it is the same message, delivered once (XÖV receipts are about the message, not
    about envelopes). Such a message is ACKNOWLEDGED again once that earlier receipt is
    delivered, now or when it is (see :func:`_acknowledge`). A confirmation that is DEAD at
    this point never reached the sender, so a new one is written; one still retrying is left
    to finish (if it goes DEAD later, the message stays DELIVERED beside a DEAD receipt, as
    without a resend, and the operator resends that receipt)."""
    earlier = unit.receipt_statuses(
        (m.ledger_id for m, _ in delivered), ReceiptType.DELIVERED.kind
    )
    for message, deliveries in delivered:
        sent = [s for s in earlier.get(message.ledger_id, ()) if s is not Status.DEAD]
        if not sent:
            receipts.add(
                message,
                rt.partner(message.sender),
                ReceiptType.DELIVERED,
                reference=reference_of(message),
                test=message.test,
                unit=unit,
                handovers=_handovers(rt, unit, message, deliveries),
            )
            continue
        if Status.DELIVERED in sent:
            unit.update(message.ledger_id, status=Status.ACKNOWLEDGED)
            counts.acknowledged += 1
            unit.event(
                message.ledger_id,
                "acknowledge",
                Status.ACKNOWLEDGED,
                detail="the sender has its Zustellbestätigung from before the resend",
            )
        else:
            unit.event(
                message.ledger_id,
                "acknowledge",
                None,
                detail="the sender's Zustellbestätigung from before the resend is on its way",
            )


def _acknowledge(unit: Unit, receipts: list[MessageRow], counts: StageCounts) -> None:
    """A delivered receipt completes its message: Zustellbestätigung → ACKNOWLEDGED.

    The parent's move is one conditional update, not a read and then a write: after an
    operator's resend, another worker may be delivering the parent again right now, and its
    :func:`_confirm` may read this receipt as not yet delivered; the conditional update waits
    for that worker and acknowledges the parent once it is DELIVERED, so one of the two always
    does."""
    statuses = unit.statuses(r.parent_id for r in receipts if r.parent_id is not None)
    acknowledged = unit.advance_where(
        {
            r.parent_id
            for r in receipts
            if r.parent_id in statuses and r.receipt_type == ReceiptType.DELIVERED.kind
        },
        from_status=Status.DELIVERED,
        to_status=Status.ACKNOWLEDGED,
    )
    for receipt in receipts:
        parent = receipt.parent_id
        if parent is None or parent not in statuses:
            continue
        label = f"{receipt.message_type} {receipt.uuid} delivered to {receipt.recipient}"
        if parent in acknowledged and receipt.receipt_type == ReceiptType.DELIVERED.kind:
            acknowledged.discard(parent)
            unit.event(parent, "acknowledge", Status.ACKNOWLEDGED, detail=label)
            counts.acknowledged += 1
        else:
            unit.event(parent, "acknowledge", None, detail=label)
