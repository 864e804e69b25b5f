"""The keystore: one directory with our identities' private keys and every partner's public keys.

Layout (everything JSON, written atomically by rename, changes serialised by ``.lock``)::

    DIR/keystore.json                   format, scrypt parameters + salt, passphrase check, and
                                        which private folder is current (``private``)
    DIR/partners/<partner>.jwks         public JWK set of a partner (ours too), with validity;
                                        ``pruned`` lists key IDs removed by :meth:`Keystore.prune`
    DIR/private[-N]/<partner>/<kid>.jwe private JWK, encrypted; mode 0600, directories 0700
    DIR/keystore.log                    audit trail of key operations (JSON lines: time, event,
                                        partners, key IDs, counts; never key material)

Private keys are encrypted at rest: the passphrase goes through scrypt (RFC 7914; N=2^15,
r=8, p=3, the OWASP-recommended equivalent of N=2^17 at a quarter of the memory, so a
process opening 1 GiB envelopes stays small) to a key-encryption key, and each private JWK is a
compact JWE (``A256KW`` + ``A256GCM``, made by joserfc) under it.

The passphrase is asked for only when a private key is first needed (public-key work — list,
export, import, verifying — never asks), from the first of these sources that is set:

1. the caller's ``passphrase`` (a string, or a callable: the hook a secrets backend plugs
   into, e.g. ``kcbus.airflow.secrets`` for Airflow Connections and Variables);
2. ``KCBUS_KEYSTORE_PASSPHRASE``;
3. ``KCBUS_KEYSTORE_PASSPHRASE_FILE``: a file holding it (a systemd credential, a Docker or
   Kubernetes secret); refused if group- or world-readable. Setting both 2 and 3 is an error;
4. a prompt, when stdin is a terminal.

Changing the passphrase (:meth:`Keystore.change_passphrase`) re-encrypts every private key
into a new folder ``private-N`` beside the current one, then switches ``keystore.json`` (new
KDF salt, new check, ``private: private-N``) in one atomic rename, then deletes the old folder.
A crash before the rename leaves the keystore on the old passphrase, after it on the new one;
never a mix. Leftover folders of an interrupted change (the half-written new one, or the old
one still encrypted under the old, maybe leaked, passphrase) are swept as soon as a process
notices them: on every write, and on a reload when no other process holds the lock.

Where the code is: :class:`Keystore` here (reading, the hot path, unlocking, writing keys);
``_keystore_passphrase_change`` changes the passphrase and sweeps leftovers, ``_keystore_prune``
prunes, ``_keystore_import`` imports partners' key sets, ``_keystore_files`` writes files
atomically and holds the names they share, ``_keystore_entries`` the index entries and the
order that says which key is newest.

Invariants:
- A ``kid`` belongs to exactly one partner; lookups by ``kid`` are unambiguous.
- A ``kid`` names one key for good: once known, it only ever comes again with the same key
  material (RFC 7638 thumbprint), ``use`` and ``alg`` (``EdDSA`` and ``Ed25519``, two names of
  one algorithm, count as the same), and a key has one ``kid``. So a cached key is never stale,
  and no key set can swap a partner's key under its known ID (a key substitution by whoever
  hands the operator the file) or bring a known key in under a new ID, as another partner's or
  without its revocation. An import that tries is refused whole (:class:`KeyConflict`: partner
  and key IDs, never key material) and writes nothing. Kids are the owner's: our own keys' are
  their thumbprints, a partner's may be any string (a FIT-Connect key's), so a kid is not
  required to be the thumbprint.
- Importing never touches our own identities: a set for one of them is refused, and so is a
  set that offers one of our keys (by ``kid`` or by key material) as a partner's.
- Every private file in the current folder is encrypted under the key that ``keystore.json``'s
  check belongs to. A process that unlocked before a passphrase change notices the new check
  (on its next write, or when a private key fails to read) and asks for the passphrase again.
- Parsed keys are cached per process (the hot path never re-reads JWKs); :meth:`refresh`
  reloads only when another process changed the directory (checked by mtime, cheap).
- Revocation is sticky: importing a key set can add a revocation, never lift one, and never
  brings back a key that :meth:`Keystore.prune` removed.
- Validity is sticky too: importing a key set can shorten a known key's validity (``nbf``
  later, ``exp`` earlier), never lengthen it. Otherwise re-importing an export from before a
  rotation would make the old key valid again for as long as it was then. Where the set offers
  a longer bound (or none), the stored one stays, the rest of the set is imported, and
  ``keystore.log`` lists the key under ``kept_stored_validity``. A key that must be used longer
  needs a new key (the owner rotates), not a new date.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
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

from adapters.envelope import _keystore_import, _keystore_passphrase_change, _keystore_prune
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
    DEFAULT_KEEP_PRIVATE,
    DEFAULT_OVERLAP,
    DEFAULT_PRUNE_GRACE,
    DEFAULT_VALIDITY,
    PROFILES,
    KeyInfo,
    Profile,
    Use,
    to_ts,
)
from adapters.envelope._keystore_entries import Entry, newest_first, order
from adapters.envelope._keystore_files import (
    CHECK,
    KEK_HEADER,
    PRIVATE_FOLDER,
    check_partner_id,
    dumps,
    mtime,
    write_atomic,
)
from adapters.envelope._keystore_prune import PrunedKey
from adapters.envelope._passphrase import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    PassphraseSource,
    passphrase_from_environment,
    read_passphrase_file,
)

__all__ = [
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "Keystore",
    "PassphraseSource",
    "PrunedKey",
    "passphrase_from_environment",
    "read_passphrase_file",
]


_FORMAT: Final = "kcbus-keystore"
_META: Final = "keystore.json"
_LOG: Final = "keystore.log"
_SCRYPT: Final = {"n": 2**15, "r": 8, "p": 3}


class Keystore:
    """A keystore directory (created on first write). See the module docstring."""

    def __init__(self, path: Path | str, passphrase: PassphraseSource = None) -> None:
        self.path = Path(path)
        self._passphrase = passphrase
        self._kek: OctKey | None = None
        self._kek_check: str | None = None  # the check of keystore.json that _kek opened
        self._meta_check: str | None = None  # the check keystore.json holds now
        self._private_name = "private"
        self._entries: dict[str, list[Entry]] = {}
        self._by_kid: dict[str, Entry] = {}
        self._pruned: dict[str, list[str]] = {}
        self._public: dict[str, VerifyKey | EncryptKey] = {}
        self._private: dict[str, SignKey | DecryptKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._holding_lock = False
        self.refresh()

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r}, partners={len(self._entries)})"

    # --- reading ------------------------------------------------------------------------

    @property
    def _partners_dir(self) -> Path:
        return self.path / "partners"

    @property
    def _private_dir(self) -> Path:
        return self.path / self._private_name

    @property
    def _meta_file(self) -> Path:
        return self.path / _META

    def _current_stamp(self) -> tuple[int, int, int]:
        return mtime(self._meta_file), mtime(self._partners_dir), mtime(self._private_dir)

    def _read_meta(self) -> dict[str, object] | None:
        try:
            meta = json.loads(self._meta_file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"{self._meta_file} is damaged") from exc
        folder = meta.get("private", "private") if isinstance(meta, dict) else None
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("kdf"), dict)
            or not isinstance(meta.get("check"), str)
            or not isinstance(folder, str)
            or not PRIVATE_FOLDER.fullmatch(folder)
        ):
            raise KeystoreError(f"{self._meta_file} is damaged")
        return meta

    def _load_meta(self) -> dict[str, object] | None:
        meta = self._read_meta()
        self._private_name = "private" if meta is None else str(meta.get("private", "private"))
        self._meta_check = None if meta is None else str(meta["check"])
        return meta

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
        if not self._holding_lock:
            _keystore_passphrase_change.sweep_if_unlocked(self)
        for _attempt in range(3):
            self._load_meta()
            entries, by_kid, pruned = self._scan()
            after = self._current_stamp()
            # A passphrase change may have switched the private folder while we listed it.
            if after[0] == stamp[0]:
                break
            stamp = after
        self._entries, self._by_kid, self._pruned, self._stamp = entries, by_kid, pruned, after

    def _scan(self) -> tuple[dict[str, list[Entry]], dict[str, Entry], dict[str, list[str]]]:
        entries: dict[str, list[Entry]] = {}
        by_kid: dict[str, Entry] = {}
        pruned: dict[str, list[str]] = {}
        if not self._partners_dir.is_dir():
            return entries, by_kid, pruned
        for file in sorted(self._partners_dir.glob("*.jwks")):
            partner = file.name.removesuffix(".jwks")
            private_dir = self._private_dir / partner
            own = (
                {p.name.removesuffix(".jwe") for p in private_dir.glob("*.jwe")}
                if private_dir.is_dir()
                else set()
            )
            try:
                content = json.loads(file.read_bytes())
                listed = [
                    Entry(KeyInfo.from_jwk(partner, jwk, private=jwk["kid"] in own), jwk)
                    for jwk in content["keys"]
                ]
                gone = [str(kid) for kid in content.get("pruned", [])]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise KeystoreError(f"unreadable key set {file}: {type(exc).__name__}") from exc
            entries[partner] = listed
            if gone:
                pruned[partner] = gone
            for entry in listed:
                by_kid[entry.info.kid] = entry
        return entries, by_kid, pruned

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
            out.extend(newest_first(infos))
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

    def _pick(self, partner: str, use: Use, now: datetime, *, private: bool) -> Entry:
        entries = self._entries.get(partner)
        if entries is None:
            self.refresh(force=True)
            entries = self._entries.get(partner)
            if entries is None:
                raise NoSuchPartner(partner)
        best: Entry | None = None
        for entry in entries:
            info = entry.info
            if info.use != use or (private and not info.private) or not info.valid_at(now):
                continue
            if best is None or order(info) > order(best.info):
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

    def _lookup(self, kid: str) -> Entry | None:
        entry = self._by_kid.get(kid)
        if entry is None:
            self.refresh(force=True)
            entry = self._by_kid.get(kid)
        return entry

    def _public_key(self, entry: Entry) -> VerifyKey | EncryptKey:
        kid = entry.info.kid
        cached = self._public.get(kid)
        if cached is None:
            material = import_key(cast("dict[str, str | list[str]]", entry.jwk)).public_key
            assert isinstance(material, (Ed25519PublicKey, RSAPublicKey, X25519PublicKey))
            cached = self._public[kid] = material
        return cached

    def _private_key(self, info: KeyInfo) -> SignKey | DecryptKey:
        cached = self._private.get(info.kid)
        if cached is not None:
            return cached
        try:
            material = self._read_private(info)
        except KeystoreError:
            # Another process may have changed the passphrase since we unlocked (the file is
            # then under a new key, or in a new folder): unlock again and retry once.
            if not self._rekeyed():
                raise
            material = self._read_private(info)
        self._private[info.kid] = material
        return material

    def _read_private(self, info: KeyInfo) -> SignKey | DecryptKey:
        file = self._private_dir / info.partner / f"{info.kid}.jwe"
        try:
            token = file.read_bytes()
        except OSError as exc:
            raise KeystoreError(f"private key {info.kid} unreadable: {exc.strerror}") from exc
        plaintext = self._decrypt_private(token, self._unlock(), info.kid)
        try:
            material = import_key(json.loads(plaintext)).private_key
        except (JoseError, ValueError) as exc:
            raise KeystoreError(f"private key {info.kid} is damaged") from exc
        assert isinstance(material, (Ed25519PrivateKey, RSAPrivateKey, X25519PrivateKey))
        return material

    @staticmethod
    def _decrypt_private(token: bytes, kek: OctKey, kid: str) -> bytes:
        try:
            plaintext = joserfc_jwe.decrypt_compact(token, kek).plaintext
        except (JoseError, ValueError) as exc:
            raise KeystoreError(f"private key {kid} is damaged") from exc
        return plaintext or b""

    def _rekeyed(self) -> bool:
        """Catch up with a passphrase change by another process: forget the key-encryption key
        if keystore.json no longer holds the check it opened, follow a new private folder.
        True if anything changed (worth a retry)."""
        folder = self._private_name
        self._load_meta()
        stale_kek = self._kek is not None and self._meta_check != self._kek_check
        if not stale_kek and self._private_name == folder:
            return False
        if stale_kek:
            self._kek = self._kek_check = None
        self._stamp = None
        self.refresh(force=True)
        return True

    # --- passphrase ---------------------------------------------------------------------

    def _ask_passphrase(self) -> str:
        source = self._passphrase
        if isinstance(source, str):
            value = source
        elif source is not None:
            value = source()
        else:
            found = passphrase_from_environment(self.path)
            if found is None:
                raise KeystoreError(
                    f"keystore {self.path} holds private keys: set {PASSPHRASE_ENV} or "
                    f"{PASSPHRASE_FILE_ENV}"
                )
            value = found
        if not value:
            raise KeystoreError("empty keystore passphrase")
        return value

    def _derive(self, passphrase: str, params: Mapping[str, object]) -> OctKey:
        try:
            salt = b64d(str(params["salt"]).encode(), "keystore")
            n, r, p = (int(str(params[name])) for name in ("n", "r", "p"))
        except (KeyError, ValueError) as exc:
            raise KeystoreError(f"{self._meta_file} is damaged") from exc
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
        return OctKey.import_key(kek)

    @staticmethod
    def _new_kdf() -> dict[str, object]:
        return {"alg": "scrypt", **_SCRYPT, "salt": b64e(os.urandom(16)).decode()}

    def unlock(self) -> None:
        """Derive the key-encryption key now (asks for the passphrase if needed), so the first
        envelope does not pay the scrypt derivation."""
        self._unlock()

    def _unlock(self) -> OctKey:
        if self._kek is not None:
            return self._kek
        meta = self._load_meta()
        passphrase = self._ask_passphrase()
        if meta is None:
            # First private key: create the KDF parameters and the passphrase check.
            params = self._new_kdf()
            kek = self._derive(passphrase, params)
            check = joserfc_jwe.encrypt_compact(KEK_HEADER, CHECK, kek)
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self._meta_file,
                dumps(
                    {
                        "format": _FORMAT,
                        "version": 1,
                        "kdf": params,
                        "check": check,
                        "private": self._private_name,
                    }
                ),
            )
            self._meta_check = check
        else:
            check = str(meta["check"])
            kek = self._derive(passphrase, cast("Mapping[str, object]", meta["kdf"]))
            try:
                ok = joserfc_jwe.decrypt_compact(check, kek).plaintext == CHECK
            except (JoseError, ValueError):
                ok = False
            if not ok:
                raise WrongPassphrase(f"wrong passphrase for keystore {self.path}")
        self._kek, self._kek_check = kek, check
        return kek

    def change_passphrase(self, new: str, *, now: datetime) -> int:
        """Re-encrypt every private key under ``new`` (the current passphrase comes from the
        usual sources). Atomic: see the module docstring. Gives the number of keys."""
        return _keystore_passphrase_change.change_passphrase(self, new, now=now)

    # --- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._holding_lock = True
            try:
                self._stamp = None
                self.refresh(force=True)
                _keystore_passphrase_change.sweep(self)
                if self._kek is not None and self._kek_check != self._meta_check:
                    # The passphrase changed since we unlocked: never write under the old key.
                    self._kek = self._kek_check = None
                yield
            finally:
                self._holding_lock = False
                fcntl.flock(lock, fcntl.LOCK_UN)
                self._stamp = None
                self.refresh(force=True)

    def _audit(self, now: datetime, event: str, **facts: object) -> None:
        """One line in keystore.log: who changed which keys when (IDs and counts only)."""
        line = json.dumps({"at": now.isoformat(), "event": event, **facts}) + "\n"
        fd = os.open(self.path / _LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def _save_public(self, partner: str, jwks: Sequence[JSON]) -> None:
        self._partners_dir.mkdir(parents=True, exist_ok=True)
        content: dict[str, object] = {"keys": list(jwks)}
        if self._pruned.get(partner):
            content["pruned"] = self._pruned[partner]
        write_atomic(self._partners_dir / f"{partner}.jwks", dumps(content))

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
            members: JSON = {
                "kid": kid,
                "use": use,
                "alg": alg,
                "iat": to_ts(created),
                "nbf": to_ts(not_before),
            }
            if valid_for is not None:
                members["exp"] = to_ts(not_before + valid_for)
            private_jwk = {**key.as_dict(private=True), **members}
            token = joserfc_jwe.encrypt_compact(KEK_HEADER, json.dumps(private_jwk), kek)
            write_atomic(private_dir / f"{kid}.jwe", token.encode(), mode=0o600)
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
            made = self._new_keys(
                partner,
                profile,
                not_before=now,
                valid_for=valid_for,
                rsa_bits=rsa_bits,
                created=now,
            )
            self._save_public(partner, made)
            self._audit(
                now,
                "identity-created",
                partner=partner,
                profile=profile,
                kids=[str(jwk["kid"]) for jwk in made],
            )
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
                current = newest_first(active)[0].profile
            made = self._new_keys(
                partner,
                current,
                not_before=start,
                valid_for=valid_for,
                rsa_bits=rsa_bits,
                created=now,
            )
            limit = to_ts(start + overlap)
            kept: list[JSON] = []
            for entry in entries:
                jwk = dict(entry.jwk)
                exp = jwk.get("exp")
                if "revoked" not in jwk and (not isinstance(exp, int) or exp > limit):
                    jwk["exp"] = limit
                kept.append(jwk)
            self._save_public(partner, made + kept)
            self._audit(
                now,
                "rotated",
                partner=partner,
                profile=current,
                kids=[str(jwk["kid"]) for jwk in made],
                not_before=start.isoformat(),
                old_keys_until=(start + overlap).isoformat(),
            )
        return self.keys(partner)

    def revoke(
        self, partner: str, kid: str, *, now: datetime, reason: str = "unspecified"
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
            self._audit(now, "revoked", partner=partner, kid=kid, reason=reason[:200])
        info = self.key(kid)
        assert info is not None
        return info

    def import_public(
        self, partner: str, jwks: Mapping[str, object], *, now: datetime
    ) -> list[KeyInfo]:
        """Add or update a partner's public keys from its exported JWK set. Gives the
        partner's keys as stored afterwards.

        Keys keep the owner's ``kid`` (else get the RFC 7638 thumbprint). New keys come in
        with the set's dates; a known key's validity may only shrink (the later ``nbf``, the
        earlier ``exp`` of stored and imported wins), and a revocation is kept forever. Keys
        whose stored validity was kept over a longer imported one are listed in the audit line
        (``kept_stored_validity``), pruned keys left out (``skipped_pruned``).

        Raises :class:`KeyConflict`, having written nothing, if the set offers a known ``kid``
        with other key material, ``use`` or ``alg``, a ``kid`` or key of another partner (or
        of ours), a known key under a new ``kid``, or one ``kid`` twice."""
        return _keystore_import.import_public(self, partner, jwks, now=now)

    def prune(
        self,
        *,
        now: datetime,
        partner: str | None = None,
        grace: timedelta = DEFAULT_PRUNE_GRACE,
        keep_private: timedelta | None = DEFAULT_KEEP_PRIVATE,
        dry_run: bool = False,
    ) -> list[PrunedKey]:
        """Remove keys that can no longer be needed: retired (revoked or expired) longer than
        ``grace`` ago — by default the oldest envelope ``open_envelope`` accepts — so nothing
        a partner may still legitimately send becomes unopenable (rules: ``_keys.prunable``).
        Keys that re-open envelopes stored in a ledger (our decryption keys, partners'
        signing keys) stay until ``keep_private`` after they expired (``None``: forever).

        The current key of each use of every partner is kept whatever its dates (the one
        seal/open would pick now, else the newest unrevoked: an identity never loses its
        current keys; a partner never vanishes). Removed key IDs are
        remembered, so re-importing an old key set does not bring them back. ``dry_run``
        reports what would go and changes nothing."""
        return _keystore_prune.prune(
            self, now=now, partner=partner, grace=grace, keep_private=keep_private, dry_run=dry_run
        )
