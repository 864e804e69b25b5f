"""Compact JWS (RFC 7515) and JWE (RFC 7516) for the two kcbus profiles, on ``cryptography``.

Only what the profiles need, exactly as the RFCs specify it, so any JOSE library opens the
result (the tests open every envelope with joserfc and jwcrypto, and open theirs with this):

    signatures (JWS "alg")        Ed25519 (RFC 9864 §2.2, fully specified; "EdDSA" with an
                                  Ed25519 key is accepted, RFC 8037 §3.1), PS512 (RFC 7518 §3.5)
    key management (JWE "alg")    ECDH-ES+A256KW over X25519 (RFC 7518 §4.6, RFC 8037 §3.2),
                                  RSA-OAEP-256 (RFC 7518 §4.3)
    content encryption ("enc")    A256GCM (RFC 7518 §5.3)

Why not a JOSE library's serializer on the hot path: joserfc and jwcrypto spend two to three
times the asymmetric crypto itself in stdlib base64 and header bookkeeping (joserfc: 600
seal+open/s against a 2,000/s crypto limit for a 20 KB message, measured). The primitives
all come from ``cryptography``; base64url comes from pybase64 (SIMD).

Invariants:
- Decoding is strict: base64url without padding in canonical form only (RFC 7515 §2,
  RFC 4648 §3.5), so no two encodings of one envelope open alike; anything else is
  :class:`Malformed`.
- Decryption failures of every kind (unwrap, OAEP, GCM tag) are one :class:`Tampered`
  ``jwe`` error and take the same path: an OAEP failure continues with a random CEK
  (RFC 7516 §11.5) so no oracle tells them apart.
- Nothing here knows about partners or time; callers pick the keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

import pybase64
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from adapters.envelope._errors import Malformed, Tampered, UnsupportedAlgorithm

__all__ = [
    "JSON",
    "JWE_ALGS",
    "JWS_ALGS",
    "DecryptKey",
    "EncryptKey",
    "JweParts",
    "JwsParts",
    "SignKey",
    "VerifyKey",
    "b64d",
    "b64e",
    "compact_length",
    "decrypt",
    "encrypt_compact",
    "parse_jwe",
    "parse_jws",
    "sign_compact",
    "verify",
]

JSON = dict[str, object]
SignKey = Ed25519PrivateKey | RSAPrivateKey
VerifyKey = Ed25519PublicKey | RSAPublicKey
EncryptKey = X25519PublicKey | RSAPublicKey
DecryptKey = X25519PrivateKey | RSAPrivateKey

#: JWS algorithms we sign with, per key type.
JWS_ALGS: Final = frozenset({"Ed25519", "EdDSA", "PS512"})
#: JWE key-management algorithms.
JWE_ALGS: Final = frozenset({"ECDH-ES+A256KW", "RSA-OAEP-256"})
ENC: Final = "A256GCM"

# A protected header bigger than this is refused before JSON parsing (a manifest of some
# thousand attachments fits easily).
MAX_HEADER: Final = 256 * 1024

_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads: Final = json.JSONDecoder().decode

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
# RFC 7518 §3.5: PS512 uses MGF1 with SHA-512 and a salt as long as the hash output.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
_SHA512 = hashes.SHA512()


_VALUE: Final = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_PAD: Final = (b"", b"===", b"==", b"=")
# Unused low bits of the last character (must be zero): 4 bits when len % 4 == 2, 2 when 3.
_UNUSED_BITS: Final = (0, 0, 0x0F, 0x03)

Buffer = bytes | bytearray | memoryview


def b64e(data: Buffer) -> bytes:
    """base64url without padding (RFC 7515 §2)."""
    return pybase64.urlsafe_b64encode(data).rstrip(b"=")


def _b64e_view(data: Buffer) -> memoryview:
    """:func:`b64e` as a view, for joining: saves the copy ``rstrip`` makes of padded output."""
    encoded = pybase64.urlsafe_b64encode(data)
    return memoryview(encoded)[: len(encoded) - (-len(data)) % 3]


def _check_alphabet(data: bytes | bytearray, part: str) -> None:
    """Refuse '+', '/' and '=' anywhere in ``data``: pybase64 with altchars accepts them, and
    they would give one envelope a second encoding (RFC 4648 §3.5). A compact token is checked
    once as a whole (three memchr passes) rather than segment by segment."""
    if b"+" in data or b"/" in data or b"=" in data:
        raise Malformed(part, detail="non-canonical base64url")


def _decode(data: Buffer, part: str, suffix: bytes = b"") -> bytes:
    """Decode base64url whose alphabet :func:`_check_alphabet` has passed, strictly: no padding,
    zero unused bits; ``suffix`` is appended in the same copy (the GCM tag after the
    ciphertext). The 4-aligned bulk is decoded in place and only the last 2-3 characters get
    their padding, so the input is never copied."""
    n = len(data)
    rem = n & 3
    try:
        if rem == 0:
            decoded = pybase64.b64decode(data, altchars=b"-_", validate=True)
            return decoded + suffix if suffix else decoded
        if rem == 1 or _VALUE.get(data[n - 1], 0) & _UNUSED_BITS[rem]:
            raise Malformed(part, detail="non-canonical base64url")
        head = n - rem
        tail = pybase64.b64decode(bytes(data[head:]) + _PAD[rem], altchars=b"-_", validate=True)
        if not head:
            return tail + suffix
        bulk = pybase64.b64decode(memoryview(data)[:head], altchars=b"-_", validate=True)
        return b"".join((bulk, tail, suffix))
    except ValueError:
        raise Malformed(part, detail="bad base64url") from None


def b64d(data: Buffer, part: str) -> bytes:
    """Strict base64url decoding; anything non-canonical is :class:`Malformed`."""
    _check_alphabet(data if isinstance(data, (bytes, bytearray)) else bytes(data), part)
    return _decode(data, part)


def _json_b64(obj: Mapping[str, object]) -> bytes:
    return b64e(_dumps(obj).encode())


def _header(segment: Buffer, part: str) -> JSON:
    """A protected header; the caller has checked its alphabet (with the token's)."""
    if len(segment) > MAX_HEADER:
        raise Malformed(part, detail="protected header too large")
    try:
        # RFC 7515 §5.2: the header is the UTF-8 of a JSON object (json.loads of bytes would
        # also guess UTF-16 and UTF-32).
        value = _loads(_decode(segment, part).decode())
    except (ValueError, UnicodeDecodeError):
        raise Malformed(part, detail="protected header is not JSON") from None
    if type(value) is not dict:
        raise Malformed(part, detail="protected header is not a JSON object")
    if "crit" in value:
        # RFC 7515 §4.1.11: we understand no extension, so any "crit" must be refused.
        raise UnsupportedAlgorithm("crit")
    return value


def _kind(key: object) -> type:
    """The profile class of a key (Ed25519PrivateKey, RSAPublicKey, ...), by its concrete type:
    ``isinstance`` against cryptography's ABCs walks the ABC cache on every call."""
    kind = _KINDS.get(type(key))
    if kind is None:
        for kind in _KEY_CLASSES:
            if isinstance(key, kind):
                _KINDS[type(key)] = kind
                return kind
        raise TypeError(f"unsupported key type {type(key).__name__}")
    return kind


_KEY_CLASSES: Final = (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    RSAPrivateKey,
    RSAPublicKey,
    X25519PrivateKey,
    X25519PublicKey,
)
_KINDS: dict[type, type] = {}


# --- JWS ------------------------------------------------------------------------------------


def sign_compact(header: Mapping[str, object], payload: bytes, key: SignKey) -> bytes:
    """JWS compact serialization (RFC 7515 §7.1); ``header["alg"]`` must match ``key``."""
    signing_input = b".".join((_json_b64(header), _b64e_view(payload)))
    if _kind(key) is Ed25519PrivateKey:
        signature = cast("Ed25519PrivateKey", key).sign(signing_input)
    else:
        signature = cast("RSAPrivateKey", key).sign(signing_input, _PSS, _SHA512)
    return b".".join((signing_input, _b64e_view(signature)))


@dataclass(frozen=True, slots=True)
class JwsParts:
    header: JSON
    signing_input: memoryview
    payload_b64: memoryview
    signature: bytes

    @property
    def alg(self) -> str:
        alg = self.header.get("alg")
        return alg if isinstance(alg, str) else ""

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    def payload(self) -> bytes:
        """The decoded payload (its alphabet was checked with the whole JWS)."""
        return _decode(self.payload_b64, "payload")


def parse_jws(token: bytes) -> JwsParts:
    first = token.find(b".")
    last = token.rfind(b".")
    if first < 0 or first == last:
        raise Malformed("signature", detail="not a compact JWS")
    _check_alphabet(token, "signature")
    view = memoryview(token)
    return JwsParts(
        header=_header(view[:first], "header"),
        signing_input=view[:last],
        payload_b64=view[first + 1 : last],
        signature=_decode(view[last + 1 :], "signature"),
    )


def verify(parts: JwsParts, key: VerifyKey) -> None:
    """Check the signature with ``key``; the caller has matched ``alg`` to the key's type."""
    alg = parts.alg
    kind = _kind(key)
    try:
        if kind is Ed25519PublicKey and alg in ("Ed25519", "EdDSA"):
            # cryptography takes any buffer; its stubs say bytes.
            signing_input = cast("bytes", parts.signing_input)
            cast("Ed25519PublicKey", key).verify(parts.signature, signing_input)
        elif kind is RSAPublicKey and alg == "PS512":
            signing_input = cast("bytes", parts.signing_input)
            cast("RSAPublicKey", key).verify(parts.signature, signing_input, _PSS, _SHA512)
        else:
            raise UnsupportedAlgorithm(alg)
    except InvalidSignature:
        raise Tampered("signature") from None


# --- JWE ------------------------------------------------------------------------------------


def _concat_kdf(z: bytes, alg: bytes, apu: bytes, apv: bytes) -> bytes:
    """Concat KDF of NIST SP 800-56A as profiled by RFC 7518 §4.6.2, for a 256-bit key:
    one SHA-256 round, counter 1, OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo ||
    SuppPubInfo (keydatalen in bits), each length-prefixed but the last."""
    other = b"".join(
        (
            len(alg).to_bytes(4, "big"),
            alg,
            len(apu).to_bytes(4, "big"),
            apu,
            len(apv).to_bytes(4, "big"),
            apv,
            (256).to_bytes(4, "big"),
        )
    )
    return hashlib.sha256(b"\x00\x00\x00\x01" + z + other).digest()


# OtherInfo for ECDH-ES+A256KW without apu/apv (what we send), precomputed.
_ECDH_OTHER: Final = b"\x00\x00\x00\x0eECDH-ES+A256KW" + bytes(8) + (256).to_bytes(4, "big")


def encrypt_compact(header: Mapping[str, object], plaintext: bytes, key: EncryptKey) -> bytes:
    """JWE compact serialization (RFC 7516 §7.1) with A256GCM; ``header["alg"]`` must be the
    key's algorithm. ``epk`` is added for ECDH-ES."""
    cek = AESGCM.generate_key(256)
    protected = dict(header)
    if _kind(key) is X25519PublicKey:
        ephemeral = X25519PrivateKey.generate()
        raw = ephemeral.public_key().public_bytes_raw()
        protected["epk"] = {"kty": "OKP", "crv": "X25519", "x": b64e(raw).decode()}
        z = ephemeral.exchange(cast("X25519PublicKey", key))
        kek = hashlib.sha256(b"\x00\x00\x00\x01" + z + _ECDH_OTHER).digest()
        encrypted_key = aes_key_wrap(kek, cek)
    else:
        encrypted_key = cast("RSAPublicKey", key).encrypt(cek, _OAEP)
    aad = _json_b64(protected)
    iv = os.urandom(12)
    sealed = memoryview(AESGCM(cek).encrypt(iv, plaintext, aad))
    return b".".join(
        (aad, b64e(encrypted_key), b64e(iv), _b64e_view(sealed[:-16]), b64e(sealed[-16:]))
    )


def _b64_length(n: int) -> int:
    return (4 * n + 2) // 3


def compact_length(
    jws_header: Mapping[str, object],
    payload_length: int,
    sign_key: SignKey,
    jwe_header: Mapping[str, object],
    encrypt_key: EncryptKey,
) -> int:
    """The exact length of ``encrypt_compact(jwe_header, sign_compact(jws_header, payload,
    sign_key), encrypt_key)`` without signing or encrypting: every part has a length fixed by
    the algorithms (signature and wrapped key by the key size, ``epk.x`` 43 characters), so a
    container can reserve room for a content JWE whose manifest digests are not known yet."""
    signature = (
        64
        if _kind(sign_key) is Ed25519PrivateKey
        else (cast("RSAPrivateKey", sign_key).key_size + 7) // 8
    )
    jws = (
        _b64_length(len(_dumps(jws_header).encode()))
        + 1
        + _b64_length(payload_length)
        + 1
        + _b64_length(signature)
    )
    protected = dict(jwe_header)
    if _kind(encrypt_key) is X25519PublicKey:
        protected["epk"] = {"kty": "OKP", "crv": "X25519", "x": "x" * 43}
        wrapped = 40  # AES key wrap of a 256-bit CEK (RFC 3394): 32 + 8
    else:
        wrapped = (cast("RSAPublicKey", encrypt_key).key_size + 7) // 8
    return (
        _b64_length(len(_dumps(protected).encode()))
        + 1
        + _b64_length(wrapped)
        + 1
        + _b64_length(12)
        + 1
        + _b64_length(jws)
        + 1
        + _b64_length(16)
    )


@dataclass(frozen=True, slots=True)
class JweParts:
    header: JSON
    aad: memoryview
    encrypted_key: bytes
    iv: bytes
    ciphertext_b64: memoryview
    tag: bytes

    @property
    def alg(self) -> str:
        alg = self.header.get("alg")
        return alg if isinstance(alg, str) else ""

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse_jwe(token: bytes) -> JweParts:
    d1 = token.find(b".")
    d2 = token.find(b".", d1 + 1)
    d3 = token.find(b".", d2 + 1)
    d4 = token.find(b".", d3 + 1)
    if d1 < 0 or d2 < 0 or d3 < 0 or d4 < 0 or token.find(b".", d4 + 1) >= 0:
        raise Malformed("jwe", detail="not a compact JWE")
    _check_alphabet(token, "jwe")
    view = memoryview(token)
    aad = view[:d1]
    header = _header(aad, "jwe")
    if header.get("enc") != ENC:
        raise UnsupportedAlgorithm(str(header.get("enc")))
    if header.get("alg") not in JWE_ALGS:
        raise UnsupportedAlgorithm(str(header.get("alg")))
    if "zip" in header:
        # Compression before encryption leaks length information; the profiles forbid it.
        raise UnsupportedAlgorithm(f"zip={header['zip']}")
    return JweParts(
        header=header,
        aad=aad,
        encrypted_key=_decode(view[d1 + 1 : d2], "jwe"),
        iv=_decode(view[d2 + 1 : d3], "jwe"),
        ciphertext_b64=view[d3 + 1 : d4],
        tag=_decode(view[d4 + 1 :], "jwe"),
    )


def _epk(header: JSON) -> X25519PublicKey:
    epk = header.get("epk")
    if type(epk) is not dict or epk.get("kty") != "OKP" or epk.get("crv") != "X25519":
        raise Tampered("jwe", detail="bad ephemeral key")
    x = epk.get("x")
    if not isinstance(x, str):
        raise Tampered("jwe", detail="bad ephemeral key")
    raw = b64d(x.encode(), "jwe")
    if len(raw) != 32:
        raise Tampered("jwe", detail="bad ephemeral key")
    return X25519PublicKey.from_public_bytes(raw)


def _party_info(header: JSON, name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise Tampered("jwe", detail=f"bad {name}")
    return b64d(value.encode(), "jwe")


def decrypt(parts: JweParts, key: DecryptKey) -> bytes:
    """The plaintext, or :class:`Tampered` ``jwe`` whatever failed."""
    if len(parts.iv) != 12 or len(parts.tag) != 16:
        raise Tampered("jwe", detail="bad IV or tag length")
    # GCM wants ciphertext || tag in one buffer: the tag rides in the decoding copy.
    sealed = _decode(parts.ciphertext_b64, "jwe", parts.tag)
    if _kind(key) is X25519PrivateKey:
        if parts.alg != "ECDH-ES+A256KW":
            raise UnsupportedAlgorithm(parts.alg)
        try:
            z = cast("X25519PrivateKey", key).exchange(_epk(parts.header))
            header = parts.header
            if "apu" in header or "apv" in header:
                apu, apv = _party_info(header, "apu"), _party_info(header, "apv")
                kek = _concat_kdf(z, b"ECDH-ES+A256KW", apu, apv)
            else:
                kek = hashlib.sha256(b"\x00\x00\x00\x01" + z + _ECDH_OTHER).digest()
            cek = aes_key_unwrap(kek, parts.encrypted_key)
        except (ValueError, InvalidUnwrap):
            # ValueError: a low-order point gives an all-zero shared secret (RFC 7748 §6.1).
            raise Tampered("jwe") from None
    else:
        if parts.alg != "RSA-OAEP-256":
            raise UnsupportedAlgorithm(parts.alg)
        try:
            cek = cast("RSAPrivateKey", key).decrypt(parts.encrypted_key, _OAEP)
        except ValueError:
            cek = b""
        if len(cek) != 32:
            cek = os.urandom(32)  # RFC 7516 §11.5: fail at the tag, not here
    try:
        return AESGCM(cek).decrypt(parts.iv, sealed, parts.aad)
    except (InvalidTag, ValueError):
        raise Tampered("jwe") from None
