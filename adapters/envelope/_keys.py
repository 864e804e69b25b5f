"""Key facts: profiles, validity and the JWK members kcbus keeps beside the key.

A *profile* is a pair of JOSE algorithms; a partner's keys say which one it uses:

    profile      signature (JWS)   key management (JWE)       key types
    modern       Ed25519           ECDH-ES+A256KW             Ed25519 / X25519 (RFC 8037)
    fitconnect   PS512             RSA-OAEP-256 + A256GCM     RSA 3072 or 4096 (FIT-Connect: 4096)

Every key is stored as a public JWK (RFC 7517) carrying ``kid`` (the RFC 7638 thumbprint for
keys made here; an imported key keeps the ``kid`` its owner gave it, because a sender must
name that one in the JWE header), ``use``, ``alg`` and the validity members that OpenID
Federation 1.0 defines for JWKs: ``iat``, ``nbf``, ``exp`` (NumericDate) and ``revoked``
(``{"revoked_at": NumericDate, "reason": str}``). Exported key sets carry them, so a partner
that imports a set also learns rotations and revocations.

A key is usable for an envelope when it is not revoked and ``nbf <= created < exp``, where
``created`` is the envelope's signed creation time: an envelope sealed with the old key shortly
before a rotation still opens during the overlap.

Pruning (:func:`prunable`): a key is *retired* from the moment it was revoked or expired,
whichever came first (a rotation already moved ``exp`` to the end of its overlap window). An
envelope can still arrive up to ``max_age + max_skew`` after it was sealed
(``adapters.envelope._replay``), so a retired key's private half may go only after that grace
has passed too. The public half of a key must outlive its revocation: exported key sets carry
the revocation to partners until the key would have expired anyway, so a revoked key's public
JWK goes only after ``exp + grace`` (never, if it has no ``exp``).

Stored envelopes need keys longer than envelopes in transit: the bus opens an inbound envelope
from its ledger again when it re-seals attachments for a resend, and a RECEIVED message may wait
through downtime. So the keys that re-opening needs — our own private *decryption* keys and
partners' public *signing* keys — stay ``keep_private`` (default :data:`DEFAULT_KEEP_PRIVATE`,
400 days: a 365-day ledger retention plus a month) after they expired, unless they were revoked
(a revoked key opens nothing, stored or not). Our signing keys and partners' encryption keys go
after the short grace: nothing ever signs or seals with an old key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from adapters.envelope._jose import JSON
from adapters.envelope._replay import DEFAULT_MAX_AGE, DEFAULT_MAX_SKEW

__all__ = [
    "DEFAULT_KEEP_PRIVATE",
    "DEFAULT_OVERLAP",
    "DEFAULT_PRUNE_GRACE",
    "DEFAULT_VALIDITY",
    "PROFILES",
    "KeyInfo",
    "Profile",
    "Use",
    "from_ts",
    "prunable",
    "to_ts",
]

Profile = Literal["modern", "fitconnect"]
Use = Literal["sig", "enc"]

#: profile -> (JWS alg, JWE alg)
PROFILES: Final[dict[str, tuple[str, str]]] = {
    "modern": ("Ed25519", "ECDH-ES+A256KW"),
    "fitconnect": ("PS512", "RSA-OAEP-256"),
}
DEFAULT_VALIDITY: Final = timedelta(days=730)
#: How long old keys stay valid after a rotation (time for partners to import the new set).
DEFAULT_OVERLAP: Final = timedelta(days=14)
#: How long a retired key is kept: the oldest envelope ``open_envelope`` accepts by default.
DEFAULT_PRUNE_GRACE: Final = DEFAULT_MAX_AGE + DEFAULT_MAX_SKEW
#: How long the keys that re-open a *stored* envelope outlive their expiry: a 365-day ledger
#: retention (the example configuration's) plus a month for messages waiting through downtime.
DEFAULT_KEEP_PRIVATE: Final = timedelta(days=400)


def to_ts(when: datetime) -> int:
    """NumericDate (RFC 7519 §2) of an aware datetime."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: kcbus passes aware UTC times")
    return int(when.timestamp())


def from_ts(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _int_member(jwk: JSON, name: str) -> int | None:
    value = jwk.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"JWK member {name} must be a NumericDate")
    return value


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What kcbus knows about one key (never the key material)."""

    partner: str
    kid: str
    use: Use
    alg: str
    created: datetime | None
    not_before: datetime | None
    expires: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None
    private: bool  # this keystore holds the private half

    @property
    def profile(self) -> Profile:
        return "modern" if self.alg in ("Ed25519", "EdDSA", "ECDH-ES+A256KW") else "fitconnect"

    def valid_at(self, when: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        if self.not_before is not None and when < self.not_before:
            return False
        return self.expires is None or when < self.expires

    def status(self, now: datetime) -> str:
        """``revoked``, ``expired``, ``pending`` (not yet valid) or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        if self.not_before is not None and now < self.not_before:
            return "pending"
        return "active"

    @classmethod
    def from_jwk(cls, partner: str, jwk: JSON, *, private: bool) -> KeyInfo:
        kid, use, alg = jwk.get("kid"), jwk.get("use"), jwk.get("alg")
        if not isinstance(kid, str) or use not in ("sig", "enc") or not isinstance(alg, str):
            raise ValueError("JWK lacks kid, use or alg")
        revoked = jwk.get("revoked")
        revoked_at: datetime | None = None
        reason: str | None = None
        if revoked is not None:
            if not isinstance(revoked, dict):
                raise ValueError("JWK member revoked must be an object")
            at = _int_member(revoked, "revoked_at")
            revoked_at = from_ts(at if at is not None else 0)
            text = revoked.get("reason")
            reason = text if isinstance(text, str) else None
        iat, nbf, exp = (_int_member(jwk, name) for name in ("iat", "nbf", "exp"))
        return cls(
            partner=partner,
            kid=kid,
            use="sig" if use == "sig" else "enc",
            alg=alg,
            created=None if iat is None else from_ts(iat),
            not_before=None if nbf is None else from_ts(nbf),
            expires=None if exp is None else from_ts(exp),
            revoked_at=revoked_at,
            revocation_reason=reason,
            private=private,
        )


def prunable(
    info: KeyInfo,
    now: datetime,
    grace: timedelta,
    keep_private: timedelta | None = DEFAULT_KEEP_PRIVATE,
) -> tuple[bool, bool]:
    """Whether the key's (private half, public JWK) can no longer be needed at ``now``.
    ``keep_private`` ``None``: keys that re-open stored envelopes are kept forever.

    The caller still protects an identity's current keys; this only reads the dates (see the
    module docstring)."""
    retired = [when for when in (info.revoked_at, info.expires) if when is not None]
    # Re-opening a stored envelope needs our decryption key and the sender's verification key;
    # a revoked one refuses the envelope anyway.
    reopens = info.revoked_at is None and (info.use == "enc") == info.private
    if reopens and keep_private is None:
        return False, False
    hold = max(grace, keep_private or grace) if reopens else grace
    private = info.private and bool(retired) and min(retired) + hold <= now
    public = info.expires is not None and info.expires + hold <= now
    # exp + hold <= now implies min(retired) + hold <= now: a JWK never outlives less than its
    # private half, so no private file is ever left without its public key.
    return private, public
