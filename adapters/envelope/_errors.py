"""Errors of the envelope layer.

Every way an envelope can fail to open is the partner's fault and maps to its own
``reason_code`` for the rejection receipt (Rückweisung). Problems with *our* keystore are
configuration errors. Texts carry envelope IDs, key IDs, partner IDs, part names and chunk
indices, never message content or key material.

    xoev.PartnerFault
    └── EnvelopeRejected                   envelope-rejected
        ├── Tampered                       envelope-tampered      (a part fails its check)
        │   └── Malformed                  envelope-malformed     (not an envelope / bad framing)
        ├── Truncated                      envelope-truncated     (stream ends early)
        ├── WrongRecipient                 envelope-wrong-recipient
        ├── UnknownSenderKey               envelope-unknown-sender-key
        ├── RevokedKey                     envelope-key-revoked
        ├── Expired                        envelope-expired        (envelope too old, key expired)
        ├── Replayed                       envelope-replayed       (a duplicate, not opened twice)
        └── UnsupportedAlgorithm           envelope-unsupported-algorithm
    xoev.ConfigurationError
    └── KeystoreError                      keystore
        ├── WrongPassphrase
        ├── NoSuchPartner
        ├── NoUsableKey
        └── KeyConflict                    (an imported key set contradicts a known key)
"""

from __future__ import annotations

from typing import ClassVar, Literal

from xoev import ConfigurationError, PartnerFault

__all__ = [
    "EnvelopeRejected",
    "Expired",
    "KeyConflict",
    "KeystoreError",
    "Malformed",
    "NoSuchPartner",
    "NoUsableKey",
    "Replayed",
    "RevokedKey",
    "Tampered",
    "Truncated",
    "UnknownSenderKey",
    "UnsupportedAlgorithm",
    "WrongPassphrase",
    "WrongRecipient",
]


class EnvelopeRejected(PartnerFault):
    """An envelope could not be opened; nothing of its content is returned."""

    reason_code = "envelope-rejected"

    def __init__(self, text: str, *, envelope_id: str | None = None) -> None:
        super().__init__(text if envelope_id is None else f"{text} (envelope {envelope_id})")
        self.envelope_id = envelope_id


class Tampered(EnvelopeRejected):
    """A part of the envelope fails its cryptographic or structural check.

    ``part`` names it: ``jwe`` (header, encrypted key, IV, ciphertext or tag: AES-GCM cannot tell
    which, RFC 7516 §5.2), ``signature``, ``header``, ``sender``, ``label``, ``attachment``
    (then ``attachment`` and ``chunk`` say where).
    """

    reason_code = "envelope-tampered"
    _phrase: ClassVar[str] = "fails its integrity check"

    def __init__(
        self,
        part: str,
        *,
        envelope_id: str | None = None,
        attachment: int | None = None,
        chunk: int | None = None,
        detail: str | None = None,
    ) -> None:
        where = part
        if attachment is not None:
            where += f" {attachment}"
        if chunk is not None:
            where += f" chunk {chunk}"
        text = f"envelope rejected: {where} {self._phrase}"
        if detail:
            text += f": {detail}"
        super().__init__(text, envelope_id=envelope_id)
        self.part = part
        self.attachment = attachment
        self.chunk = chunk


class Malformed(Tampered):
    """The bytes are not a kcbus envelope at all, or its framing/encoding is broken."""

    reason_code = "envelope-malformed"
    _phrase: ClassVar[str] = "is malformed"


class Truncated(EnvelopeRejected):
    """The envelope ends before all its parts (or all chunks of an attachment) arrived."""

    reason_code = "envelope-truncated"

    def __init__(
        self,
        part: str,
        *,
        envelope_id: str | None = None,
        attachment: int | None = None,
        chunk: int | None = None,
    ) -> None:
        where = part if attachment is None else f"{part} {attachment}"
        if chunk is not None:
            where += f" chunk {chunk}"
        super().__init__(f"envelope truncated in {where}", envelope_id=envelope_id)
        self.part = part
        self.attachment = attachment
        self.chunk = chunk


class WrongRecipient(EnvelopeRejected):
    """The envelope is encrypted for a key this keystore does not hold, or names another
    recipient in its signed header (surreptitious forwarding, Davis 2001)."""

    reason_code = "envelope-wrong-recipient"

    def __init__(
        self, kid: str | None, *, envelope_id: str | None = None, recipient: str | None = None
    ) -> None:
        text = f"envelope is not for us: no private key {kid}"
        if recipient is not None:
            text = f"envelope is addressed to partner {recipient}, not to the holder of key {kid}"
        super().__init__(text, envelope_id=envelope_id)
        self.kid = kid
        self.recipient = recipient


class UnknownSenderKey(EnvelopeRejected):
    """The signing key ID is not a known partner's key."""

    reason_code = "envelope-unknown-sender-key"

    def __init__(self, kid: str | None, *, envelope_id: str | None = None) -> None:
        super().__init__(f"unknown sender key {kid}", envelope_id=envelope_id)
        self.kid = kid


class RevokedKey(EnvelopeRejected):
    """The signing or decryption key has been revoked."""

    reason_code = "envelope-key-revoked"

    def __init__(self, kid: str, partner: str, *, envelope_id: str | None = None) -> None:
        super().__init__(f"key {kid} of partner {partner} is revoked", envelope_id=envelope_id)
        self.kid = kid
        self.partner = partner


class Expired(EnvelopeRejected):
    """The envelope is outside the accepted time window, or a key was not valid when it was
    sealed. ``what`` is one of ``envelope-too-old``, ``envelope-from-future``,
    ``key-expired``, ``key-not-yet-valid``."""

    reason_code = "envelope-expired"

    def __init__(
        self, what: str, *, envelope_id: str | None = None, kid: str | None = None
    ) -> None:
        text = f"envelope rejected: {what}"
        if kid is not None:
            text += f" (key {kid})"
        super().__init__(text, envelope_id=envelope_id)
        self.what = what
        self.kid = kid


class Replayed(EnvelopeRejected):
    """The envelope ID was seen before within the replay window: a duplicate."""

    reason_code = "envelope-replayed"

    def __init__(self, envelope_id: str) -> None:
        super().__init__("envelope was already received", envelope_id=envelope_id)


class UnsupportedAlgorithm(EnvelopeRejected):
    """A JOSE algorithm outside the two profiles, or one that does not match the key."""

    reason_code = "envelope-unsupported-algorithm"

    def __init__(self, alg: str, *, envelope_id: str | None = None) -> None:
        super().__init__(f"unsupported algorithm {alg[:40]!r}", envelope_id=envelope_id)
        self.alg = alg


class KeystoreError(ConfigurationError):
    """The keystore is missing, locked, or lacks a key we need; an operator must act."""

    reason_code = "keystore"


class WrongPassphrase(KeystoreError):
    """The passphrase does not unlock the keystore's private keys."""


class NoSuchPartner(KeystoreError):
    """The keystore has no keys for this partner."""

    def __init__(self, partner: str) -> None:
        super().__init__(f"keystore has no keys for partner {partner}")
        self.partner = partner


class NoUsableKey(KeystoreError):
    """The partner has keys, but none valid for this use at this time."""

    def __init__(self, partner: str, use: str) -> None:
        super().__init__(f"partner {partner} has no valid {use} key (expired, revoked or missing)")
        self.partner = partner
        self.use = use


class KeyConflict(KeystoreError):
    """An imported key set contradicts what the keystore knows, so the whole set is refused.

    A key ID names one key of one partner for good. ``conflict`` says how the set breaks that:
    ``partner`` (the key ID is ``holder``'s; or, with ``other_kid``, the key material is
    ``holder``'s key ``other_kid``), ``key`` (other key material under a known key ID),
    ``use`` or ``alg`` (a known key offered for another one: ``known``, ``offered``),
    ``duplicate`` (the set lists the key ID twice). The text names partners, key IDs, uses and
    algorithms, never key material.
    """

    def __init__(
        self,
        partner: str,
        kid: str,
        conflict: Literal["partner", "key", "use", "alg", "duplicate"],
        *,
        holder: str | None = None,
        other_kid: str | None = None,
        known: str | None = None,
        offered: str | None = None,
    ) -> None:
        if conflict == "partner" and other_kid is not None:
            what = f"is key {other_kid} of partner {holder} under another key ID"
        elif conflict == "partner":
            what = f"already belongs to partner {holder}"
        elif conflict == "key":
            what = "comes with other key material than the known key of that ID"
        elif conflict == "duplicate":
            what = "is listed twice in the key set"
        else:
            what = f"comes with {conflict} {offered}, known with {conflict} {known}"
        super().__init__(f"key {kid} for partner {partner} {what}: key set refused")
        self.partner = partner
        self.kid = kid
        self.conflict = conflict
        self.holder = holder
        self.other_kid = other_kid
        self.known = known
        self.offered = offered
