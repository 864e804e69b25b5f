"""The keystore: one directory with our identities' private keys and every partner's public keys.

Layout (everything JSON, written atomically by rename, changes serialised by ``.lock``)::

    DIR/keystore.json                   format, scrypt parameters + salt, passphrase check
    DIR/partners/<partner>.jwks         public JWK set of a partner (ours too), with validity
    DIR/private/<partner>/<kid>.jwe     private JWK, encrypted; mode 0600, directories 0700

Private keys are encrypted at rest: the passphrase goes through scrypt (RFC 7914; N=2^15,
r=8, p=3, the OWASP-recommended equivalent of N=2^17 at a quarter of the memory, so a
process opening 1 GiB envelopes stays small) to a key-encryption key, and each private JWK is a
compact JWE (``A256KW`` + ``A256GCM``, made by joserfc) under it. The passphrase comes from the
caller (a string, or a callable: the hook a secrets backend plugs into), else from
``KCBUS_KEYSTORE_PASSPHRASE``, else from a prompt when stdin is a terminal. It is asked for only
when a private key is first needed; public-key work (list, export, import, sealing needs only
the sender's key) never unlocks more than it must.

Invariants:
- A ``kid`` belongs to exactly one partner; lookups by ``kid`` are unambiguous.
- Parsed keys are cached per process (the hot path never re-reads JWKs); :meth:`refresh`
  reloads only when another process changed the directory (checked by mtime, cheap).
- Revocation is sticky: importing a key set can add a revocation, never lift one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from joserfc import jwe as joserfc_jwe
from joserfc.errors import JoseError
from joserfc.jwk import Key, OctKey, OKPKey, RSAKey, import_key

from adapters.envelope._errors import (
    KeystoreError,
    NoSuchPartner,
    NoUsableKey,
    WrongPassphrase,
)
from adapters.envelope._jose import (
    JSON,
    DecryptKey,
    EncryptKey,
    SignKey,
    VerifyKey,
    b64d,
    b64e,
)
from adapters.envelope._keys import (
    DEFAULT_OVERLAP,
    DEFAULT_VALIDITY,
    PROFILES,
    KeyInfo,
    Profile,
    Use,
    to_ts,
)

__all__ = ["PASSPHRASE_ENV", "Keystore", "PassphraseSource"]

PASSPHRASE_ENV: Final = "KCBUS_KEYSTORE_PASSPHRASE"
PassphraseSource = str | Callable[[], str] | None

_FORMAT: Final = "kcbus-keystore"
_CHECK: Final = b"kcbus keystore passphrase check"
_SCRYPT: Final = {"n": 2**15, "r": 8, "p": 3}
_PARTNER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEK_HEADER: Final = {"alg": "A256KW", "enc": "A256GCM", "kid": "kcbus-keystore"}


def check_partner_id(partner: str) -> str:
    if not _PARTNER_ID.fullmatch(partner):
        raise KeystoreError(
            f"bad partner ID {partner[:64]!r}: use letters, digits, '.', '_', '-' (max 64)"
        )
    return partner


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _dumps(value: object) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


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


@dataclass
class _Entry:
    info: KeyInfo
    jwk: JSON  # public JWK with kcbus members


class Keystore:
    """A keystore directory (created on first write). See the module docstring."""

    def __init__(self, path: Path | str, passphrase: PassphraseSource = None) -> None:
        self.path = Path(path)
        self._passphrase = passphrase
        self._kek: OctKey | None = None
        self._entries: dict[str, list[_Entry]] = {}
        self._by_kid: dict[str, _Entry] = {}
        self._public: dict[str, VerifyKey | EncryptKey] = {}
        self._private: dict[str, SignKey | DecryptKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self.refresh()

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r}, partners={len(self._entries)})"

    # --- reading ------------------------------------------------------------------------

    @property
    def _partners_dir(self) -> Path:
        return self.path / "partners"

    @property
    def _private_dir(self) -> Path:
        return self.path / "private"

    def _current_stamp(self) -> tuple[int, int]:
        stamps = []
        for folder in (self._partners_dir, self._private_dir):
            try:
                stamps.append(folder.stat().st_mtime_ns)
            except FileNotFoundError:
                stamps.append(0)
        return stamps[0], stamps[1]

    def refresh(self, *, force: bool = False) -> None:
        """Reload the key index if another process changed the keystore. Looks at most once
        a second unless ``force``d (a miss on a kid or partner forces a look)."""
        checked = time.monotonic()
        if not force and checked - self._checked < 1.0:
            return
        self._checked = checked
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return
        entries: dict[str, list[_Entry]] = {}
        by_kid: dict[str, _Entry] = {}
        if self._partners_dir.is_dir():
            for file in sorted(self._partners_dir.glob("*.jwks")):
                partner = file.name.removesuffix(".jwks")
                private_dir = self._private_dir / partner
                own = (
                    {p.name.removesuffix(".jwe") for p in private_dir.glob("*.jwe")}
                    if private_dir.is_dir()
                    else set()
                )
                try:
                    keys = json.loads(file.read_bytes())["keys"]
                    listed = [
                        _Entry(KeyInfo.from_jwk(partner, jwk, private=jwk["kid"] in own), jwk)
                        for jwk in keys
                    ]
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise KeystoreError(f"unreadable key set {file}: {type(exc).__name__}") from exc
                entries[partner] = listed
                for entry in listed:
                    by_kid[entry.info.kid] = entry
        self._entries, self._by_kid, self._stamp = entries, by_kid, stamp

    def partners(self) -> list[str]:
        self.refresh(force=True)
        return sorted(self._entries)

    def keys(self, partner: str | None = None) -> list[KeyInfo]:
        """Key facts, newest first per partner."""
        self.refresh(force=True)
        if partner is not None and partner not in self._entries:
            raise NoSuchPartner(partner)
        names = [partner] if partner is not None else sorted(self._entries)
        out: list[KeyInfo] = []
        for name in names:
            infos = [e.info for e in self._entries[name]]
            out.extend(_newest_first(infos))
        return out

    def key(self, kid: str) -> KeyInfo | None:
        self.refresh(force=True)
        entry = self._by_kid.get(kid)
        return None if entry is None else entry.info

    def profile(self, partner: str, now: datetime) -> Profile:
        """The profile of the partner's newest active signing key."""
        return self._pick(partner, "sig", now, private=False).info.profile

    def is_own(self, partner: str) -> bool:
        self.refresh(force=True)
        return any(e.info.private for e in self._entries.get(partner, ()))

    def export_public(self, partner: str) -> dict[str, list[JSON]]:
        """The partner's public JWK set, with validity and revocations, as JSON."""
        self.refresh(force=True)
        if partner not in self._entries:
            raise NoSuchPartner(partner)
        return {"keys": [dict(e.jwk) for e in self._entries[partner]]}

    # --- hot path (used by seal/open) ----------------------------------------------------

    def _pick(self, partner: str, use: Use, now: datetime, *, private: bool) -> _Entry:
        entries = self._entries.get(partner)
        if entries is None:
            self.refresh(force=True)
            entries = self._entries.get(partner)
            if entries is None:
                raise NoSuchPartner(partner)
        best: _Entry | None = None
        for entry in entries:
            info = entry.info
            if info.use != use or (private and not info.private) or not info.valid_at(now):
                continue
            if best is None or _order(info) > _order(best.info):
                best = entry
        if best is None:
            raise NoUsableKey(partner, use if not private else f"private {use}")
        return best

    def signer(self, partner: str, now: datetime) -> tuple[KeyInfo, SignKey]:
        """Our newest valid signing key for ``partner`` (an identity of this keystore)."""
        entry = self._pick(partner, "sig", now, private=True)
        key = self._private_key(entry.info)
        assert isinstance(key, (Ed25519PrivateKey, RSAPrivateKey))
        return entry.info, key

    def encrypter(self, partner: str, now: datetime) -> tuple[KeyInfo, EncryptKey]:
        """The recipient's newest valid encryption key."""
        entry = self._pick(partner, "enc", now, private=False)
        key = self._public_key(entry)
        assert isinstance(key, (X25519PublicKey, RSAPublicKey))
        return entry.info, key

    def verifier(self, kid: str) -> tuple[KeyInfo, VerifyKey] | None:
        entry = self._lookup(kid)
        if entry is None or entry.info.use != "sig":
            return None
        key = self._public_key(entry)
        assert isinstance(key, (Ed25519PublicKey, RSAPublicKey))
        return entry.info, key

    def decrypter(self, kid: str) -> tuple[KeyInfo, DecryptKey] | None:
        entry = self._lookup(kid)
        if entry is None or entry.info.use != "enc" or not entry.info.private:
            return None
        key = self._private_key(entry.info)
        assert isinstance(key, (X25519PrivateKey, RSAPrivateKey))
        return entry.info, key

    def _lookup(self, kid: str) -> _Entry | None:
        entry = self._by_kid.get(kid)
        if entry is None:
            self.refresh(force=True)
            entry = self._by_kid.get(kid)
        return entry

    def _public_key(self, entry: _Entry) -> VerifyKey | EncryptKey:
        kid = entry.info.kid
        cached = self._public.get(kid)
        if cached is None:
            material = import_key(cast("dict[str, str | list[str]]", entry.jwk)).public_key
            assert isinstance(
                material, (Ed25519PublicKey, RSAPublicKey, X25519PublicKey)
            )
            cached = self._public[kid] = material
        return cached

    def _private_key(self, info: KeyInfo) -> SignKey | DecryptKey:
        cached = self._private.get(info.kid)
        if cached is None:
            file = self._private_dir / info.partner / f"{info.kid}.jwe"
            try:
                token = file.read_bytes()
            except OSError as exc:
                raise KeystoreError(f"private key {info.kid} unreadable: {exc.strerror}") from exc
            try:
                plaintext = joserfc_jwe.decrypt_compact(token, self._unlock()).plaintext
                jwk = json.loads(plaintext or b"")
                material = import_key(jwk).private_key
            except (JoseError, ValueError) as exc:
                raise KeystoreError(f"private key {info.kid} is damaged") from exc
            assert isinstance(
                material, (Ed25519PrivateKey, RSAPrivateKey, X25519PrivateKey)
            )
            cached = self._private[info.kid] = material
        return cached

    # --- passphrase ---------------------------------------------------------------------

    def _ask_passphrase(self) -> str:
        source = self._passphrase
        if isinstance(source, str):
            value = source
        elif source is not None:
            value = source()
        elif os.environ.get(PASSPHRASE_ENV):
            value = os.environ[PASSPHRASE_ENV]
        elif sys.stdin is not None and sys.stdin.isatty():
            value = getpass.getpass(f"passphrase for keystore {self.path}: ")
        else:
            raise KeystoreError(
                f"keystore {self.path} holds private keys: set {PASSPHRASE_ENV}"
            )
        if not value:
            raise KeystoreError("empty keystore passphrase")
        return value

    def _derive(self, passphrase: str, params: Mapping[str, object]) -> OctKey:
        try:
            salt = b64d(str(params["salt"]).encode(), "keystore")
            n, r, p = (int(str(params[name])) for name in ("n", "r", "p"))
        except (KeyError, ValueError) as exc:
            raise KeystoreError(f"{self.path / 'keystore.json'} is damaged") from exc
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
        return OctKey.import_key(kek)

    def unlock(self) -> None:
        """Derive the key-encryption key now (asks for the passphrase if needed), so the first
        envelope does not pay the scrypt derivation."""
        self._unlock()

    def _unlock(self) -> OctKey:
        if self._kek is not None:
            return self._kek
        meta_file = self.path / "keystore.json"
        try:
            meta = json.loads(meta_file.read_bytes())
            params, check = meta["kdf"], meta["check"]
        except FileNotFoundError:
            meta = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeystoreError(f"{meta_file} is damaged") from exc
        passphrase = self._ask_passphrase()
        if meta is None:
            # First private key: create the KDF parameters and the passphrase check.
            params = {"alg": "scrypt", **_SCRYPT, "salt": b64e(os.urandom(16)).decode()}
            kek = self._derive(passphrase, params)
            check = joserfc_jwe.encrypt_compact(_KEK_HEADER, _CHECK, kek)
            self.path.mkdir(parents=True, exist_ok=True)
            _write_atomic(meta_file, _dumps({"format": _FORMAT, "version": 1, "kdf": params,
                                             "check": check}))
        else:
            kek = self._derive(passphrase, params)
            try:
                ok = joserfc_jwe.decrypt_compact(check, kek).plaintext == _CHECK
            except JoseError:
                ok = False
            if not ok:
                raise WrongPassphrase(f"wrong passphrase for keystore {self.path}")
        self._kek = kek
        return kek

    # --- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._stamp = None
                self.refresh(force=True)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
                self._stamp = None
                self.refresh(force=True)

    def _save_public(self, partner: str, jwks: Sequence[JSON]) -> None:
        self._partners_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._partners_dir / f"{partner}.jwks", _dumps({"keys": list(jwks)}))

    def _new_keys(
        self,
        partner: str,
        profile: Profile,
        *,
        not_before: datetime,
        valid_for: timedelta | None,
        rsa_bits: int,
        created: datetime,
    ) -> list[JSON]:
        if profile not in PROFILES:
            raise KeystoreError(f"unknown profile {profile!r}: modern or fitconnect")
        if profile == "fitconnect" and rsa_bits not in (3072, 4096):
            raise KeystoreError("fitconnect RSA keys are 3072 or 4096 bits")
        kek = self._unlock()
        sig_alg, enc_alg = PROFILES[profile]
        made: list[JSON] = []
        private_dir = self._private_dir / partner
        private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self._private_dir, 0o700)
        os.chmod(private_dir, 0o700)
        for use, alg in (("sig", sig_alg), ("enc", enc_alg)):
            key: Key
            if profile == "modern":
                key = OKPKey.generate_key("Ed25519" if use == "sig" else "X25519")
            else:
                key = RSAKey.generate_key(rsa_bits)
            kid = key.thumbprint()
            members: JSON = {"kid": kid, "use": use, "alg": alg, "iat": to_ts(created),
                             "nbf": to_ts(not_before)}
            if valid_for is not None:
                members["exp"] = to_ts(not_before + valid_for)
            private_jwk = {**key.as_dict(private=True), **members}
            token = joserfc_jwe.encrypt_compact(_KEK_HEADER, json.dumps(private_jwk), kek)
            _write_atomic(private_dir / f"{kid}.jwe", token.encode(), mode=0o600)
            made.append({**key.as_dict(private=False), **members})
        return made

    def create_identity(
        self,
        partner: str,
        profile: Profile,
        *,
        now: datetime,
        valid_for: timedelta | None = DEFAULT_VALIDITY,
        rsa_bits: int = 4096,
    ) -> list[KeyInfo]:
        """New signing + encryption keys for one of *our* partners (the bus, or a partner
        whose CLI this is). Refused if the partner already has keys: use :meth:`rotate`."""
        check_partner_id(partner)
        with self._locked():
            if partner in self._entries:
                raise KeystoreError(f"partner {partner} already has keys: rotate them instead")
            made = self._new_keys(partner, profile, not_before=now, valid_for=valid_for,
                                  rsa_bits=rsa_bits, created=now)
            self._save_public(partner, made)
        return self.keys(partner)

    def rotate(
        self,
        partner: str,
        *,
        now: datetime,
        overlap: timedelta = DEFAULT_OVERLAP,
        not_before: datetime | None = None,
        profile: Profile | None = None,
        valid_for: timedelta | None = DEFAULT_VALIDITY,
        rsa_bits: int = 4096,
    ) -> list[KeyInfo]:
        """New keys for our ``partner`` valid from ``not_before`` (default now); the old ones
        stay valid ``overlap`` longer, so envelopes sealed with them still open and partners
        have time to import the new set. A later ``not_before`` pre-stages the switch."""
        start = now if not_before is None else not_before
        with self._locked():
            entries = self._entries.get(partner)
            if not entries:
                raise NoSuchPartner(partner)
            if not any(e.info.private for e in entries):
                raise KeystoreError(f"partner {partner} is not an identity of this keystore")
            current = profile
            if current is None:
                active = [e.info for e in entries if e.info.use == "sig" and e.info.private]
                current = _newest_first(active)[0].profile
            made = self._new_keys(partner, current, not_before=start, valid_for=valid_for,
                                  rsa_bits=rsa_bits, created=now)
            limit = to_ts(start + overlap)
            kept: list[JSON] = []
            for entry in entries:
                jwk = dict(entry.jwk)
                exp = jwk.get("exp")
                if "revoked" not in jwk and (not isinstance(exp, int) or exp > limit):
                    jwk["exp"] = limit
                kept.append(jwk)
            self._save_public(partner, made + kept)
        return self.keys(partner)

    def revoke(self, partner: str, kid: str, *, now: datetime, reason: str = "unspecified"
               ) -> KeyInfo:
        """Revoke a key (ours or a partner's): nothing sealed or signed with it opens again."""
        with self._locked():
            entries = self._entries.get(partner)
            if entries is None:
                raise NoSuchPartner(partner)
            if not any(e.info.kid == kid for e in entries):
                raise KeystoreError(f"partner {partner} has no key {kid}")
            jwks = []
            for entry in entries:
                jwk = dict(entry.jwk)
                if entry.info.kid == kid and "revoked" not in jwk:
                    jwk["revoked"] = {"revoked_at": to_ts(now), "reason": reason[:200]}
                jwks.append(jwk)
            self._save_public(partner, jwks)
        info = self.key(kid)
        assert info is not None
        return info

    def import_public(self, partner: str, jwks: Mapping[str, object], *, now: datetime
                      ) -> list[KeyInfo]:
        """Add or update a partner's public keys from its exported JWK set.

        Keys keep the owner's ``kid`` (else get the RFC 7638 thumbprint); validity dates
        follow the newer set; a revocation is kept forever."""
        check_partner_id(partner)
        keys = jwks.get("keys")
        if not isinstance(keys, list) or not keys:
            raise KeystoreError("not a JWK set: no 'keys' array")
        incoming: list[JSON] = []
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
            incoming.append(jwk)
        with self._locked():
            if self.is_own(partner):
                raise KeystoreError(f"partner {partner} is an identity of this keystore")
            merged = {str(e.jwk["kid"]): dict(e.jwk) for e in self._entries.get(partner, ())}
            for jwk in incoming:
                kid = str(jwk["kid"])
                owner = self._by_kid.get(kid)
                if owner is not None and owner.info.partner != partner:
                    raise KeystoreError(
                        f"key {kid} already belongs to partner {owner.info.partner}"
                    )
                old = merged.get(kid)
                if old is not None and "revoked" in old:
                    jwk["revoked"] = old["revoked"]
                merged[kid] = jwk
            self._save_public(partner, list(merged.values()))
        return self.keys(partner)


def _order(info: KeyInfo) -> tuple[float, float]:
    nbf = info.not_before.timestamp() if info.not_before else float("-inf")
    iat = info.created.timestamp() if info.created else float("-inf")
    return nbf, iat


def _newest_first(infos: Sequence[KeyInfo]) -> list[KeyInfo]:
    return sorted(infos, key=lambda i: (_order(i), i.use == "sig"), reverse=True)
