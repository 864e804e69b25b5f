"""Content encryption at rest: AES-256-GCM, a key ID per blob, rotation without rewrite.

A :class:`ContentKeyring` holds 256-bit keys by ID and one *active* key. New blobs are
encrypted under the active key with a fresh 96-bit random nonce (NIST SP 800-38D §8.2.2: random
IVs are safe for up to 2^32 messages per key — rotate long before). The associated data binds a
ciphertext to its place in the ledger, so a blob copied onto another row fails to open.
Old keys stay in the ring so old blobs still open; :meth:`Ledger.reencrypt` moves them to the
active key, after which an old key may be retired.

The ring lives in a JSON file (mode 0600) *outside* the database, so a stolen database or
backup file alone reveals no content. Back the key file up separately.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kcbus._errors import ContentKeyMissing, LedgerError

__all__ = ["ContentKeyring", "Sealed"]


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    data: bytes


class ContentKeyring:
    """Keys by ID; encrypts under the active one, decrypts under whichever a blob names."""

    def __init__(self, keys: dict[str, bytes], active: str, path: Path | None = None) -> None:
        if active not in keys:
            raise LedgerError(f"active ledger key {active!r} is not in the key ring")
        for kid, key in keys.items():
            if len(key) != 32:
                raise LedgerError(f"ledger key {kid!r} is not 256 bits")
        self._keys = dict(keys)
        self._aead = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active
        self.path = path

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def generate(cls) -> ContentKeyring:
        kid = _new_kid()
        return cls({kid: AESGCM.generate_key(bit_length=256)}, kid)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> ContentKeyring:
        """Read the ring from ``path``; create it with one fresh key if missing and allowed."""
        if not path.exists():
            if not create:
                raise LedgerError(f"ledger key file {path} does not exist")
            ring = cls.generate()
            ring.path = path
            ring.save()
            return ring
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            keys = {kid: base64.b64decode(value) for kid, value in doc["keys"].items()}
            active = str(doc["active"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"ledger key file {path} is unreadable") from exc
        return cls(keys, active, path)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "active": self.active,
            "keys": {kid: base64.b64encode(key).decode() for kid, key in self._keys.items()},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def _reload(self) -> None:
        assert self.path is not None
        fresh = ContentKeyring.open(self.path, create=False)
        self._keys = dict(fresh._keys)
        self._aead = dict(fresh._aead)
        self.active = fresh.active

    def rotate(self) -> str:
        """Add a fresh key and make it active (old ones stay for old blobs); saves the file."""
        kid = _new_kid()
        self._keys[kid] = AESGCM.generate_key(bit_length=256)
        self._aead[kid] = AESGCM(self._keys[kid])
        self.active = kid
        self.save()
        return kid

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    # -- use --------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, associated: bytes, *, key_id: str | None = None) -> Sealed:
        """Encrypt under the active key, or under ``key_id`` (the chunks of one large blob all
        use the key its ``blobs`` row names, even if the ring rotates meanwhile)."""
        kid = key_id or self.active
        nonce = secrets.token_bytes(12)
        return Sealed(kid, nonce, self._aead[kid].encrypt(nonce, plaintext, associated))

    def decrypt(self, key_id: str, nonce: bytes, data: bytes, associated: bytes) -> bytes:
        aead = self._aead.get(key_id)
        if aead is None and self.path is not None:
            # Another process rotated the key: pick up the new ring (old keys stay in it).
            self._reload()
            aead = self._aead.get(key_id)
        if aead is None:
            raise ContentKeyMissing(key_id)
        try:
            return aead.decrypt(nonce, data, associated)
        except InvalidTag as exc:
            raise LedgerError(
                "ledger content fails its integrity check (tampered or misplaced)"
            ) from exc

    def __repr__(self) -> str:  # never the keys
        return f"ContentKeyring(active={self.active!r}, keys={len(self._keys)})"


def _new_kid() -> str:
    return "k" + secrets.token_hex(6)
