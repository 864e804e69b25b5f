"""Opening: decrypt, verify the sender, check time, replay and every attachment chunk.

Order of checks (each failure is its own error class; nothing is returned before all pass):

1. framing and JWE header (:class:`Malformed`, :class:`UnsupportedAlgorithm`);
2. the JWE ``kid`` is one of our private encryption keys (:class:`WrongRecipient`), not
   revoked (:class:`RevokedKey`), and its algorithm is the header's;
3. decryption (:class:`Tampered` ``jwe``: header, encrypted key, IV, ciphertext or tag);
4. the JWS ``kid`` is a known partner's signing key (:class:`UnknownSenderKey`), not revoked,
   the signature verifies (:class:`Tampered` ``signature``);
5. signed facts: ``typ``, envelope ID equal to the JWE header's, ``from`` is the key's owner,
   ``to`` is the owner of the decrypting key (:class:`WrongRecipient`);
6. time: created within ``[now - max_age, now + max_skew]``, both keys valid at creation
   (:class:`Expired`);
7. replay guard (:class:`Replayed`);
8. attachments: record sizes, every chunk, the digest (:class:`Truncated`, :class:`Tampered`),
   decrypted to hidden temporary files that are renamed into place only when all of them
   verified, and deleted otherwise — opening never leaves partial plaintext behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from adapters.envelope._container import (
    KIND_ATTACHMENT,
    KIND_CONTENT,
    KIND_LABEL,
    MAX_TOKEN,
    EnvelopeSource,
    Reader,
    as_stream,
)
from adapters.envelope._errors import (
    Expired,
    KeystoreError,
    Malformed,
    Replayed,
    RevokedKey,
    Tampered,
    UnknownSenderKey,
    UnsupportedAlgorithm,
    WrongRecipient,
)
from adapters.envelope._jose import JSON, JwsParts, b64d, decrypt, parse_jwe, parse_jws, verify
from adapters.envelope._keys import KeyInfo, from_ts
from adapters.envelope._keystore import Keystore
from adapters.envelope._model import (
    ManifestEntry,
    OpenedAttachment,
    OpenedEnvelope,
    OpenedLabel,
    RoutingLabel,
)
from adapters.envelope._replay import DEFAULT_MAX_AGE, DEFAULT_MAX_SKEW, ReplayGuard
from adapters.envelope._stream import attachment_key, decrypt_stream, sealed_size

__all__ = ["EnvelopeInfo", "open_envelope", "open_label", "peek_envelope"]

_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SIG_ALGS: Final = {
    "Ed25519": ("Ed25519", "EdDSA"),
    "EdDSA": ("Ed25519", "EdDSA"),
    "PS512": ("PS512",),
}


def _header_id(header: JSON) -> str | None:
    facts = header.get("kcbus")
    value = facts.get("id") if isinstance(facts, dict) else None
    return value if isinstance(value, str) and _SAFE_ID.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class _Verified:
    facts: JSON
    jws: JwsParts
    cty: str
    envelope_id: str
    created: datetime
    sender: KeyInfo
    recipient: KeyInfo


def _check_key_time(info: KeyInfo, created: datetime, envelope_id: str) -> None:
    if info.not_before is not None and created < info.not_before:
        raise Expired("key-not-yet-valid", envelope_id=envelope_id, kid=info.kid)
    if info.expires is not None and created >= info.expires:
        raise Expired("key-expired", envelope_id=envelope_id, kid=info.kid)


def _open_token(
    token: bytes,
    keystore: Keystore,
    *,
    typ: str,
    now: datetime,
    max_age: timedelta,
    max_skew: timedelta,
) -> _Verified:
    jwe = parse_jwe(token)
    outer_id = _header_id(jwe.header)
    kid = jwe.kid
    found = keystore.decrypter(kid) if kid else None
    if found is None:
        raise WrongRecipient(kid, envelope_id=outer_id)
    enc_info, enc_key = found
    if enc_info.revoked_at is not None:
        raise RevokedKey(enc_info.kid, enc_info.partner, envelope_id=outer_id)
    if jwe.alg != enc_info.alg:
        raise UnsupportedAlgorithm(jwe.alg, envelope_id=outer_id)
    jws = parse_jws(decrypt(jwe, enc_key))

    sig_kid = jws.kid
    known = keystore.verifier(sig_kid) if sig_kid else None
    if known is None:
        raise UnknownSenderKey(sig_kid, envelope_id=outer_id)
    sig_info, sig_key = known
    if sig_info.revoked_at is not None:
        raise RevokedKey(sig_info.kid, sig_info.partner, envelope_id=outer_id)
    if jws.alg not in _SIG_ALGS.get(sig_info.alg, ()):
        raise UnsupportedAlgorithm(jws.alg, envelope_id=outer_id)
    verify(jws, sig_key)

    facts = jws.header.get("kcbus")
    if not isinstance(facts, dict) or facts.get("v") != 1 or jws.header.get("typ") != typ:
        raise Tampered("header", envelope_id=outer_id, detail=f"not a {typ}")
    envelope_id, iat = facts.get("id"), facts.get("iat")
    if not isinstance(envelope_id, str) or envelope_id != outer_id:
        raise Tampered("header", envelope_id=outer_id, detail="envelope IDs differ")
    if type(iat) is not int:
        raise Tampered("header", envelope_id=envelope_id, detail="no creation time")
    if facts.get("from") != sig_info.partner:
        raise Tampered(
            "sender", envelope_id=envelope_id, detail=f"signed by a key of {sig_info.partner}"
        )
    if facts.get("to") != enc_info.partner:
        to = facts.get("to")
        raise WrongRecipient(
            enc_info.kid, envelope_id=envelope_id, recipient=to if isinstance(to, str) else "?"
        )
    created = from_ts(iat)
    if created < now - max_age:
        raise Expired("envelope-too-old", envelope_id=envelope_id)
    if created > now + max_skew:
        raise Expired("envelope-from-future", envelope_id=envelope_id)
    _check_key_time(sig_info, created, envelope_id)
    _check_key_time(enc_info, created, envelope_id)
    cty = jws.header.get("cty")
    return _Verified(
        facts=facts,
        jws=jws,
        cty=cty if isinstance(cty, str) else "application/octet-stream",
        envelope_id=envelope_id,
        created=created,
        sender=sig_info,
        recipient=enc_info,
    )


def _manifest(facts: JSON, envelope_id: str) -> tuple[tuple[ManifestEntry, ...], bytes]:
    raw = facts.get("att")
    if raw is None:
        return (), b""
    if not isinstance(raw, list) or not raw:
        raise Malformed("manifest", envelope_id=envelope_id)
    entries = tuple(ManifestEntry.from_json(item) for item in raw)
    if len({e.name for e in entries}) != len(entries):
        raise Malformed("manifest", envelope_id=envelope_id, detail="duplicate names")
    akey_text = facts.get("akey")
    if not isinstance(akey_text, str):
        raise Malformed("manifest", envelope_id=envelope_id, detail="no attachment key")
    akey = b64d(akey_text.encode(), "manifest")
    if len(akey) != 32:
        raise Malformed("manifest", envelope_id=envelope_id, detail="bad attachment key")
    return entries, akey


def _check_replay(guard: ReplayGuard | None, envelope_id: str) -> None:
    if guard is not None and guard.seen(envelope_id):
        raise Replayed(envelope_id)


def _open_attachments(
    reader: Reader,
    entries: tuple[ManifestEntry, ...],
    akey: bytes,
    envelope_id: str,
    directory: Path,
) -> tuple[OpenedAttachment, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    temps: list[Path] = []
    linked: list[Path] = []
    opened: list[OpenedAttachment] = []
    try:
        for index, entry in enumerate(entries):
            kind, length = reader.next()
            if kind != KIND_ATTACHMENT or length != sealed_size(entry.size, entry.chunk_size):
                raise Tampered(
                    "container",
                    envelope_id=envelope_id,
                    attachment=index,
                    detail="attachment record does not match the manifest",
                )
            final = directory / entry.name
            if final.exists():
                raise KeystoreError(f"{final} exists: open into an empty folder")
            temp = directory / f".kcbus-{os.getpid()}-{index}.part"
            temps.append(temp)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                write: Callable[[memoryview], object] = out.write
                digest = decrypt_stream(
                    reader.stream,
                    entry.size,
                    attachment_key(akey, envelope_id, index),
                    entry.chunk_size,
                    index,
                    write,
                    envelope_id=envelope_id,
                )
            reader.offset += length
            if digest != entry.sha256:
                raise Tampered(
                    "attachment",
                    envelope_id=envelope_id,
                    attachment=index,
                    detail="digest differs from the signed manifest",
                )
            opened.append(OpenedAttachment(entry, final))
        reader.expect_end()
        for temp, item in zip(temps, opened, strict=True):
            os.link(temp, item.path)  # no-clobber rename: fails if the name appeared meanwhile
            linked.append(item.path)
            temp.unlink()
    except BaseException:
        for path in (*temps, *linked):
            path.unlink(missing_ok=True)
        raise
    return tuple(opened)


def open_envelope(
    source: EnvelopeSource,
    *,
    keystore: Keystore,
    now: datetime,
    replay_guard: ReplayGuard | None,
    attachments_dir: Path | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> OpenedEnvelope:
    """Open an envelope sealed for one of the keystore's identities (see module docstring).

    Attachments are written into ``attachments_dir`` (required when there are any). A routing
    label, if present, is skipped: it is for the bus. ``replay_guard=None`` disables the
    replay check (the time window still applies).
    """
    keystore.refresh()
    if isinstance(source, bytes) and source[:2] == b"ey" and len(source) <= MAX_TOKEN:
        # Fast path for the common case, a compact JWE in memory: no stream, no copies.
        verified = _open_token(
            source.rstrip(b" \t\r\n"),
            keystore,
            typ="kcbus-message",
            now=now,
            max_age=max_age,
            max_skew=max_skew,
        )
        if "att" in verified.facts:
            raise Malformed(
                "container",
                envelope_id=verified.envelope_id,
                detail="the manifest lists attachments the envelope lacks",
            )
        _check_replay(replay_guard, verified.envelope_id)
        message = verified.jws.payload()
        if replay_guard is not None:
            replay_guard.remember(verified.envelope_id, verified.created)
        return _opened(verified, message, (), ())
    with as_stream(source) as stream:
        reader = Reader(stream)
        if reader.compact is not None:
            token = reader.compact
        else:
            kind, length = reader.next()
            if kind == KIND_LABEL:
                reader.skip(length, "label")
                kind, length = reader.next()
            if kind != KIND_CONTENT:
                raise Malformed("container", detail="no content record")
            token = reader.token(length, "jwe")
        verified = _open_token(
            token, keystore, typ="kcbus-message", now=now, max_age=max_age, max_skew=max_skew
        )
        envelope_id = verified.envelope_id
        entries, akey = _manifest(verified.facts, envelope_id)
        if reader.compact is not None and entries:
            raise Malformed(
                "container",
                envelope_id=envelope_id,
                detail="the manifest lists attachments the envelope lacks",
            )
        _check_replay(replay_guard, envelope_id)
        message = verified.jws.payload()
        opened: tuple[OpenedAttachment, ...] = ()
        if entries:
            if attachments_dir is None:
                raise KeystoreError(
                    f"envelope {envelope_id} carries {len(entries)} attachments: "
                    "pass a folder for them"
                )
            opened = _open_attachments(reader, entries, akey, envelope_id, attachments_dir)
        elif reader.compact is None:
            reader.expect_end()
    if replay_guard is not None:
        replay_guard.remember(envelope_id, verified.created)
    return _opened(verified, message, entries, opened)


def _opened(
    verified: _Verified,
    message: bytes,
    entries: tuple[ManifestEntry, ...],
    opened: tuple[OpenedAttachment, ...],
) -> OpenedEnvelope:
    return OpenedEnvelope(
        message=message,
        media_type=verified.cty,
        sender=verified.sender.partner,
        recipient=verified.recipient.partner,
        envelope_id=verified.envelope_id,
        created=verified.created,
        signing_kid=verified.sender.kid,
        encryption_kid=verified.recipient.kid,
        manifest=entries,
        attachments=opened,
    )


def open_label(
    source: EnvelopeSource,
    *,
    keystore: Keystore,
    now: datetime,
    replay_guard: ReplayGuard | None,
    max_age: timedelta = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> OpenedLabel:
    """Open the routing label of an end-to-end envelope (the bus's view): verifies the sender
    and that the label belongs to this content, without being able to read the content.
    Attachment records are not read."""
    keystore.refresh()
    with as_stream(source) as stream:
        reader = Reader(stream)
        kind, length = (b"", 0) if reader.compact is not None else reader.next()
        if kind != KIND_LABEL:
            raise Malformed("label", detail="the envelope has no routing label")
        verified = _open_token(
            reader.token(length, "label"),
            keystore,
            typ="kcbus-label",
            now=now,
            max_age=max_age,
            max_skew=max_skew,
        )
        envelope_id = verified.envelope_id
        kind, length = reader.next()
        if kind != KIND_CONTENT:
            raise Malformed("container", envelope_id=envelope_id, detail="no content record")
        content = reader.token(length, "jwe")
    facts = verified.facts
    if facts.get("content") != hashlib.sha256(content).hexdigest():
        raise Tampered("label", envelope_id=envelope_id, detail="content does not match")
    if _header_id(parse_jwe(content).header) != envelope_id:
        raise Tampered("label", envelope_id=envelope_id, detail="envelope IDs differ")
    final, count = facts.get("for"), facts.get("attachments")
    if not isinstance(final, str) or type(count) is not int:
        raise Tampered("label", envelope_id=envelope_id, detail="incomplete label")
    try:
        raw = json.loads(verified.jws.payload())
    except ValueError:
        raise Malformed("label", envelope_id=envelope_id) from None
    if not isinstance(raw, dict):
        raise Malformed("label", envelope_id=envelope_id)
    label = RoutingLabel.from_json(raw)
    _check_replay(replay_guard, envelope_id)
    if replay_guard is not None:
        replay_guard.remember(envelope_id, verified.created)
    return OpenedLabel(
        label=label,
        sender=verified.sender.partner,
        recipient=final,
        bus=verified.recipient.partner,
        envelope_id=envelope_id,
        created=verified.created,
        signing_kid=verified.sender.kid,
        encryption_kid=verified.recipient.kid,
        content_sha256=str(facts["content"]),
        attachment_count=count,
    )


@dataclass(frozen=True, slots=True)
class EnvelopeInfo:
    """What anyone can see of an envelope without keys (for transports and the ledger)."""

    envelope_id: str | None
    container: bool
    has_label: bool
    recipient_kid: str | None


def peek_envelope(source: EnvelopeSource) -> EnvelopeInfo:
    """Envelope ID and shape from the unencrypted JWE header. Nothing is verified: use it
    to deduplicate or route to a queue, never to trust."""
    with as_stream(source) as stream:
        reader = Reader(stream)
        has_label = False
        if reader.compact is not None:
            token = reader.compact
        else:
            kind, length = reader.next()
            if kind == KIND_LABEL:
                has_label = True
                reader.skip(length, "label")
                kind, length = reader.next()
            if kind != KIND_CONTENT:
                raise Malformed("container", detail="no content record")
            token = reader.token(length, "jwe")
    jwe = parse_jwe(token)
    return EnvelopeInfo(_header_id(jwe.header), reader.compact is None, has_label, jwe.kid)
