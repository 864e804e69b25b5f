"""Importing a partner's public key set into the keystore.

A set is checked key by key before anything is written (public members only, one of the two
profiles, readable dates, each key ID once), then merged under the lock: new keys come in with
the set's dates; a known key keeps the shorter of both validities and any revocation; pruned
keys stay out. A key ID names one key for good: a set that offers a known key ID with other key
material, use or alg, a key ID or key of another partner, or a known key under a new key ID is
refused whole (:class:`KeyConflict`) and nothing is written, so no set can swap a key under a
process that has it cached. The module docstring of ``_keystore`` states these invariants.
Entry point: :meth:`Keystore.import_public`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, cast

from joserfc.errors import JoseError
from joserfc.jwk import Key, OKPKey, RSAKey, import_key

from adapters.envelope._errors import KeyConflict, KeystoreError
from adapters.envelope._jose import JSON
from adapters.envelope._keys import KeyInfo, Use, to_ts
from adapters.envelope._keystore_files import check_partner_id

if TYPE_CHECKING:
    from adapters.envelope._keystore import Keystore

__all__ = ["import_public", "kept_stored_validity"]

_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: Two names of one algorithm: RFC 9864 §2.2 made "Ed25519" the fully specified name of what
#: "EdDSA" means for an Ed25519 key (``_open`` accepts either). A set that renames it is no
#: change of the key's algorithm; the stored name stays.
_SAME_ALG: Final = {"EdDSA": "Ed25519"}


def _algorithms_for(jwk: JSON, key: Key) -> tuple[Use, str]:
    """Check that a partner's public key fits one of the profiles; give its use and alg."""
    use, alg = jwk.get("use"), jwk.get("alg")
    if isinstance(key, OKPKey):
        crv = jwk.get("crv")
        if crv == "Ed25519" and use in (None, "sig") and alg in (None, "Ed25519", "EdDSA"):
            return "sig", "Ed25519" if alg is None else str(alg)
        if crv == "X25519" and use in (None, "enc") and alg in (None, "ECDH-ES+A256KW"):
            return "enc", "ECDH-ES+A256KW"
    elif isinstance(key, RSAKey):
        bits = key.public_key.key_size
        if bits < 3072:
            raise KeystoreError(f"RSA key of {bits} bits: the fitconnect profile needs >= 3072")
        if (use, alg) in (("sig", None), ("sig", "PS512"), (None, "PS512")):
            return "sig", "PS512"
        if (use, alg) in (("enc", None), ("enc", "RSA-OAEP-256"), (None, "RSA-OAEP-256")):
            return "enc", "RSA-OAEP-256"
    raise KeystoreError(
        f"key {jwk.get('kid')} (kty {jwk.get('kty')}, use {use}, alg {alg}) fits neither "
        "profile: modern = Ed25519/X25519, fitconnect = RSA PS512/RSA-OAEP-256"
    )


def _starts_earlier(stored: object, offered: object) -> bool:
    """Whether an offered ``nbf`` lies before the stored one (a missing bound is unbounded)."""
    return isinstance(stored, int) and (not isinstance(offered, int) or offered < stored)


def _ends_later(stored: object, offered: object) -> bool:
    """Whether an offered ``exp`` lies after the stored one (a missing bound is unbounded)."""
    return isinstance(stored, int) and (not isinstance(offered, int) or offered > stored)


def _keep_shorter_validity(stored: JSON, imported: JSON) -> bool:
    """Give ``imported``, a new JWK of a known key, the shorter of both validities: the later
    ``nbf`` and the earlier ``exp`` (a missing one is unbounded). True if the import offered a
    longer bound, so a stored one stayed: an old key set must not revive a key that a rotation
    (or a partner's shorter set) already cut short."""
    longer = False
    if _starts_earlier(stored.get("nbf"), imported.get("nbf")):
        imported["nbf"] = stored["nbf"]
        longer = True
    if _ends_later(stored.get("exp"), imported.get("exp")):
        imported["exp"] = stored["exp"]
        longer = True
    return longer


def kept_stored_validity(jwks: Mapping[str, object], stored: Sequence[KeyInfo]) -> list[str]:
    """The key IDs of ``jwks`` that offered a longer validity than the keystore kept;
    ``stored`` is what :meth:`Keystore.import_public` gave for that set (for telling the
    operator, who may expect the set's dates)."""
    by_kid = {info.kid: info for info in stored}
    kept = []
    keys = jwks.get("keys")
    for key in keys if isinstance(keys, list) else []:
        info = by_kid.get(str(key.get("kid"))) if isinstance(key, dict) else None
        if info is None:
            continue
        nbf = None if info.not_before is None else to_ts(info.not_before)
        exp = None if info.expires is None else to_ts(info.expires)
        if _starts_earlier(nbf, key.get("nbf")) or _ends_later(exp, key.get("exp")):
            kept.append(info.kid)
    return kept


def _parse(partner: str, jwks: Mapping[str, object]) -> list[JSON]:
    """The set's keys as the public JWKs the keystore stores; refuses the set if any is bad."""
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise KeystoreError("not a JWK set: no 'keys' array")
    incoming: dict[str, JSON] = {}
    for raw in keys:
        if not isinstance(raw, dict):
            raise KeystoreError("not a JWK set: a key is not an object")
        if _PRIVATE_MEMBERS & raw.keys():
            raise KeystoreError("the key set contains private key material: refused")
        try:
            key = import_key(raw)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise KeystoreError(f"bad JWK {raw.get('kid')}: {type(exc).__name__}") from exc
        use, alg = _algorithms_for(raw, key)
        jwk: JSON = {**key.as_dict(private=False)}
        jwk["kid"] = raw["kid"] if isinstance(raw.get("kid"), str) else key.thumbprint()
        jwk["use"], jwk["alg"] = use, alg
        for member in ("iat", "nbf", "exp", "revoked"):
            if member in raw:
                jwk[member] = raw[member]
        try:
            KeyInfo.from_jwk(partner, jwk, private=False)
        except ValueError as exc:
            raise KeystoreError(f"bad JWK {jwk['kid']}: {exc}") from exc
        kid = str(jwk["kid"])
        if kid in incoming:
            raise KeyConflict(partner, kid, "duplicate")
        incoming[kid] = jwk
    return list(incoming.values())


def _thumbprint(jwk: JSON) -> str:
    """The key's RFC 7638 thumbprint: its public parameters alone, whatever else the JWK
    holds (``kid``, dates, revocation)."""
    try:
        return import_key(cast("dict[str, str | list[str]]", jwk)).thumbprint()
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise KeystoreError(f"key {jwk.get('kid')} is damaged: {type(exc).__name__}") from exc


def _check_same_key(partner: str, kid: str, stored: JSON, imported: JSON, thumbprint: str) -> None:
    """Refuse ``imported`` (its key's ``thumbprint`` given) unless it is the very key that
    ``stored``, of the same key ID, is: same key material, use and alg. Otherwise whoever hands
    the operator a key set could swap a partner's key under its known ID, and processes that
    cached the old key would disagree with those that read the new one."""
    if thumbprint != _thumbprint(stored):
        raise KeyConflict(partner, kid, "key")
    known_use, offered_use = str(stored["use"]), str(imported["use"])
    if offered_use != known_use:
        raise KeyConflict(partner, kid, "use", known=known_use, offered=offered_use)
    known_alg, offered_alg = str(stored["alg"]), str(imported["alg"])
    if _SAME_ALG.get(offered_alg, offered_alg) != _SAME_ALG.get(known_alg, known_alg):
        raise KeyConflict(partner, kid, "alg", known=known_alg, offered=offered_alg)
    imported["alg"] = known_alg


def import_public(
    store: Keystore, partner: str, jwks: Mapping[str, object], *, now: datetime
) -> list[KeyInfo]:
    """:meth:`Keystore.import_public` (documented there), on ``store``."""
    check_partner_id(partner)
    try:
        return _merge(store, partner, _parse(partner, jwks), now=now)
    except KeyConflict as conflict:
        # a refused set is a security event (someone offered a key in another's name): the
        # audit trail keeps who, which key ID and how, never key material. Best effort: a
        # keystore not written yet (or read-only) must still report the conflict itself.
        with contextlib.suppress(OSError):
            store._audit(
                now,
                "import-refused",
                partner=partner,
                kid=conflict.kid,
                conflict=conflict.conflict,
                holder=conflict.holder,
            )
        raise


def _merge(store: Keystore, partner: str, incoming: list[JSON], *, now: datetime) -> list[KeyInfo]:
    with store._locked():
        if store.is_own(partner):
            raise KeystoreError(f"partner {partner} is an identity of this keystore")
        merged = {str(e.jwk["kid"]): dict(e.jwk) for e in store._entries.get(partner, ())}
        pruned_by = {kid: name for name, kids in store._pruned.items() for kid in kids}
        # Every key the keystore holds (ours too), and the set's, by thumbprint: one key ID
        # per key, so no key comes in again as somebody else's, or under a new ID without its
        # revocation. Pruned keys are remembered by ID only; the IDs of keys made by a kcbus
        # keystore are their thumbprints, so for those a pruned ID is the thumbprint.
        known = {kid: (name, kid) for kid, name in pruned_by.items()}
        known.update(
            {_thumbprint(e.jwk): (e.info.partner, kid) for kid, e in store._by_kid.items()}
        )
        skipped: list[str] = []
        kept_validity: list[str] = []
        for jwk in incoming:
            kid = str(jwk["kid"])
            owner = store._by_kid.get(kid)
            holder = owner.info.partner if owner is not None else pruned_by.get(kid)
            if holder is not None and holder != partner:
                raise KeyConflict(partner, kid, "partner", holder=holder)
            if kid in pruned_by:
                # Pruned once (retired): an old key set must not bring it back, least of
                # all without the revocation it may have had.
                skipped.append(kid)
                continue
            thumbprint = _thumbprint(jwk)
            old = merged.get(kid)
            if old is not None:
                _check_same_key(partner, kid, old, jwk, thumbprint)
                if "revoked" in old:
                    jwk["revoked"] = old["revoked"]
                # iat orders keys of the same nbf (which one signs): a set must not reorder
                if "iat" in old:
                    jwk["iat"] = old["iat"]
                else:
                    jwk.pop("iat", None)
                if _keep_shorter_validity(old, jwk):
                    kept_validity.append(kid)
            key_holder, other_kid = known.setdefault(thumbprint, (partner, kid))
            if other_kid != kid:
                raise KeyConflict(partner, kid, "partner", holder=key_holder, other_kid=other_kid)
            merged[kid] = jwk
        store._save_public(partner, list(merged.values()))
        store._audit(
            now,
            "imported",
            partner=partner,
            kids=[str(jwk["kid"]) for jwk in incoming if jwk["kid"] not in skipped],
            skipped_pruned=skipped,
            kept_stored_validity=kept_validity,
        )
    return store.keys(partner)
