"""Stage *open*: RECEIVED → OPENED, or REJECTED / DUPLICATE with a Rückweisung.

Per message (DESIGN.md, "Message life cycle" 2, and "Two inspection modes"):

1. An envelope *with* a routing label is end-to-end: the bus opens only the label
   (:func:`adapters.envelope.open_label`), which verifies the sender's signature and that the
   label belongs to the content, and keeps the content sealed for the final recipient
   (:func:`adapters.envelope.forward_content`). Without a label the envelope is sealed for the
   bus: it is opened, parsed hardened and its header read (:func:`xoev.read_header`).
2. The signing key's owner must be a registered partner; the authenticated transport peer,
   if the transport has one, must be that partner; the header's ``autor`` must be the
   partner's XÖV address.
3. The partner may send this message type; a route takes it; the route's inspection mode is
   how the envelope is sealed.
4. The message UUID is new (else DUPLICATE, referencing the first message with it).

Envelopes are opened "as of" their arrival time: one that waited in the ledger during an outage
is not refused as too old. Replays are caught by the ledger: an envelope ID another message
already opened is refused (:class:`adapters.envelope.Replayed`).

Memory: a large envelope (stored in chunks, see :mod:`kcbus.ledger._chunks`) is opened from
the ledger's stream, never whole: attachments go to scratch (and are deleted at once), and
end-to-end content is forwarded from the stored envelope's stream into a chunked blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from adapters.envelope import (
    EnvelopeInfo,
    Malformed,
    SealedEnvelope,
    forward_content,
    open_envelope,
    open_label,
    peek_envelope,
)
from kcbus._errors import (
    DuplicateMessage,
    InspectionMismatch,
    NoRoute,
    SenderMismatch,
    TypeNotAllowed,
    UnknownSender,
)
from kcbus.config import Partner, Route
from kcbus.ledger import Kind, MessageRow, Status, StoredBlob, Unit
from kcbus.pipeline._common import (
    Facts,
    ReceiptQueue,
    StageCounts,
    fault_of,
    reject,
    retry_later,
    with_fields,
)
from kcbus.pipeline._runtime import Runtime, work
from xoev import ConfigurationError, PartnerFault, parse_xml, read_header

__all__ = ["open_batch", "open_rows"]

_STAGE = "open"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class _Guard:
    """:class:`adapters.envelope.ReplayGuard` over the ledger, for one batch."""

    def __init__(self, opened_elsewhere: set[str]) -> None:
        self._seen = set(opened_elsewhere)

    def seen(self, envelope_id: str) -> bool:
        return envelope_id in self._seen

    def remember(self, envelope_id: str, created: datetime) -> None:
        self._seen.add(envelope_id)


#: An envelope as the open stage reads it: in memory, or a seekable stream from the ledger.
_Raw = bytes | BinaryIO


@dataclass
class _Opened:
    facts: Facts
    #: The content to store: in memory, or (large end-to-end content) to be streamed.
    content: bytes | SealedEnvelope
    envelope_id: str
    sender: Partner
    route: Route
    tree: etree._ElementTree | None
    digest: str  # SHA-256 hex of content ("" until a streamed content is stored)


def _peek(raw: _Raw) -> EnvelopeInfo | None:
    try:
        return peek_envelope(raw)
    except Malformed:
        return None
    finally:
        _rewind(raw)


def _rewind(raw: _Raw) -> None:
    if not isinstance(raw, bytes):
        raw.seek(0)


def open_batch(rt: Runtime, limit: int, *, unit: Unit | None = None) -> StageCounts:
    """Claim up to ``limit`` RECEIVED messages and open them."""
    return open_rows(rt, limit, unit=unit)[0]


def open_rows(
    rt: Runtime, limit: int, *, unit: Unit | None = None
) -> tuple[StageCounts, list[MessageRow]]:
    """As :func:`open_batch`; also gives the rows now OPENED (for the next stage, same unit)."""
    counts = StageCounts()
    advanced: list[MessageRow] = []
    with work(rt, unit) as unit, contextlib.ExitStack() as cleanup:
        rows = unit.claim([Status.RECEIVED], limit, kind=Kind.MESSAGE)
        if not rows:
            return counts, advanced
        raws: dict[int, _Raw] = {}
        for message_id, found in unit.blob_sources("envelope", [r.ledger_id for r in rows]).items():
            raws[message_id] = (
                cleanup.enter_context(found.open()) if isinstance(found, StoredBlob) else found
            )
        peeked = {r.ledger_id: _peek(raws[r.ledger_id]) for r in rows}
        guard = _Guard(
            unit.opened_envelope_ids(
                [p.envelope_id for p in peeked.values() if p and p.envelope_id],
                exclude=[r.ledger_id for r in rows],
            )
        )
        receipts = ReceiptQueue(rt)
        opened: dict[int, tuple[MessageRow, _Opened]] = {}
        for row in rows:
            try:
                info = peeked[row.ledger_id]
                if info is None:
                    raise Malformed("container", envelope_id=row.envelope_id)
                result = _open_one(rt, row, raws[row.ledger_id], guard, info.has_label)
            except _Refused as refused:
                fields = _fields(refused.facts, refused.envelope_id, refused.sender, None)
                reject(
                    rt,
                    unit,
                    row,
                    _STAGE,
                    [fault_of(refused.cause)],
                    receipts,
                    counts,
                    sender=refused.sender,
                    fields=fields,
                )
                continue
            except PartnerFault as exc:
                sender = rt.partner(_peer_partner(rt, row))
                reject(
                    rt,
                    unit,
                    row,
                    _STAGE,
                    [fault_of(exc)],
                    receipts,
                    counts,
                    sender=sender,
                    fields={"envelope_id": row.envelope_id},
                )
                continue
            except ConfigurationError as exc:
                retry_later(rt, unit, row, _STAGE, exc, counts)
                continue
            opened[row.ledger_id] = (row, result)

        owners = unit.claim_uuids([(mid, o.facts.message_uuid) for mid, (_, o) in opened.items()])
        for message_id, (row, result) in opened.items():
            facts = result.facts
            fields = _fields(facts, result.envelope_id, result.sender, result.route)
            original = owners.get(message_id)
            if original is not None:
                duplicate = DuplicateMessage(facts.message_uuid, original)
                fields["parent_id"] = original
                reject(
                    rt,
                    unit,
                    row,
                    _STAGE,
                    [fault_of(duplicate)],
                    receipts,
                    counts,
                    sender=result.sender,
                    status=Status.DUPLICATE,
                    fields=fields,
                )
                continue
            if isinstance(result.content, bytes):
                unit.put_blob(message_id, "content", result.content, digest=result.digest)
            else:  # large end-to-end content: streamed into chunks
                with result.content.open() as src:
                    _, result.digest = unit.put_blob_stream(message_id, "content", src)
            fields["content_digest"] = result.digest
            unit.put_blob(message_id, "facts", facts.dump())
            changes: dict[str, object] = {
                "status": Status.OPENED,
                "attempts": 0,
                "next_attempt_at": None,
                "reason_code": None,
                "reason": None,
                **fields,
            }
            unit.update(message_id, **changes)
            advanced.append(with_fields(row, changes))
            how = "routing label" if result.route.end_to_end else "envelope"
            unit.event(
                message_id,
                _STAGE,
                Status.OPENED,
                detail=(
                    f"{how} opened, signed by {result.sender.id}; {facts.message_type} "
                    f"on route {result.route.name}"
                ),
            )
            if result.tree is not None:
                rt.trees[message_id] = result.tree
            counts.opened += 1
        counts.receipts += receipts.flush(unit)
    return counts, advanced


class _Refused(Exception):
    """The envelope opened and its sender is verified, but the bus refuses the message."""

    def __init__(
        self, cause: PartnerFault, sender: Partner, facts: Facts, envelope_id: str
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sender = sender
        self.facts = facts
        self.envelope_id = envelope_id


def _fields(
    facts: Facts, envelope_id: str, sender: Partner, route: Route | None
) -> dict[str, object]:
    fields: dict[str, object] = {
        "uuid": facts.message_uuid,
        "envelope_id": envelope_id,
        "sender": sender.id,
        "inspection": facts.inspection,
        "message_type": facts.message_type,
        "standard": facts.standard,
        "version": facts.version,
        "test": facts.test,
    }
    if route is not None:
        fields["route"] = route.name
        fields["inspection"] = route.inspection
    return fields


def _normal_id(message_id: str) -> str:
    # RFC 4122 §3: UUIDs compare case-insensitively; other families' IDs (CDA, XJustiz) are
    # kept exactly as sent.
    return message_id.lower() if _UUID.fullmatch(message_id) else message_id


def _peer_partner(rt: Runtime, row: MessageRow) -> str | None:
    """The partner an authenticated transport identity names (for receipts about envelopes
    that could not be opened: without a verified sender, only the transport says who it was)."""
    if row.peer is None:
        return None
    for partner in rt.config.partners.values():
        if row.peer in (partner.peer, partner.id):
            return partner.id
    return None


def _open_one(
    rt: Runtime,
    row: MessageRow,
    raw: _Raw,
    guard: _Guard,
    has_label: bool,
) -> _Opened:
    as_of = row.received_at
    tree: etree._ElementTree | None = None
    content: bytes | SealedEnvelope
    if has_label:
        label = open_label(raw, keystore=rt.keystore, now=as_of, replay_guard=guard)
        _rewind(raw)
        sender_id = label.sender
        if isinstance(raw, bytes):
            content = forward_content(raw, label).data()
            digest = hashlib.sha256(content).hexdigest()
        else:
            # read from the stored envelope when it is stored (the stream stays open for the
            # batch). Digest: computed while it is stored.
            content = forward_content(raw, label)
            digest = ""
        facts = Facts(
            message_uuid=label.label.message_id,
            message_type=label.label.message_type,
            standard=label.label.standard,
            version=label.label.version,
            test=label.label.test,
            author=label.label.author,
            readers=label.label.readers,
            inspection="end-to-end",
            final_recipient=label.recipient,
            attachments=label.attachment_count,
            profile=label.label.header_profile,
        )
        envelope_id = label.envelope_id
    else:
        # Only an envelope with attachments creates this folder (and then it goes again at
        # once: the attachments stay in the stored envelope until they are re-sealed).
        scratch = (
            Path(rt.scratch or tempfile.gettempdir()) / f"kcbus-open-{os.getpid()}-{row.ledger_id}"
        )
        try:
            envelope = open_envelope(
                raw,
                keystore=rt.keystore,
                now=as_of,
                replay_guard=guard,
                attachments_dir=scratch,
            )
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        sender_id = envelope.sender
        content = envelope.message
        digest = envelope.message_sha256
        tree = parse_xml(content)
        header = read_header(tree)
        facts = Facts(
            message_uuid=_normal_id(header.message_id),
            message_type=header.message_type,
            standard=header.standard,
            version=header.version,
            test=header.test,
            author=None if header.author is None else header.author.address,
            readers=tuple(p.address for p in header.readers),
            inspection="full",
            attachments=len(envelope.manifest),
            profile=header.profile,
        )
        envelope_id = envelope.envelope_id

    sender = rt.partner(sender_id)
    if sender is None:
        raise UnknownSender(sender_id)
    try:
        route = _admit(rt, row, facts, sender)
    except PartnerFault as exc:
        raise _Refused(exc, sender, facts, envelope_id) from exc
    return _Opened(facts, content, envelope_id, sender, route, tree, digest)


def _admit(rt: Runtime, row: MessageRow, facts: Facts, sender: Partner) -> Route:
    """The checks after the signature: who may send what, on which route."""
    if row.peer is not None and row.peer not in (sender.peer or sender.id, sender.id):
        raise SenderMismatch(sender.id, f"transport identity {row.peer} is another partner")
    reader_ids = []
    for address in facts.readers:
        vd, sep, kennung = address.partition(":")
        if not sep:
            vd, kennung = "", address
        partner = rt.config.partner_by_address(vd or None, kennung)
        if partner is not None:
            reader_ids.append(partner.id)
    if facts.final_recipient is not None:
        reader_ids.append(facts.final_recipient)
    route = rt.config.route_for(
        message_type=facts.message_type,
        standard=facts.standard,
        sender=sender.id,
        readers=reader_ids,
    )
    if not sender.may_send_type(facts.message_type):
        raise TypeNotAllowed(sender.id, facts.message_type, route.name if route else "-")
    if (
        sender.address is not None
        and facts.author is not None
        and facts.author != str(sender.address)
    ):
        raise SenderMismatch(sender.id, "the header's autor is not this partner's address")
    if route is None:
        raise NoRoute(sender.id, facts.message_type)
    if route.inspection != facts.inspection:
        raise InspectionMismatch(route.name, route.inspection)
    return route
