"""Envelope benchmarks (issue 3).

* seal + open of a 20 KB message per second on one core, per profile, beside the bare
  asymmetric-crypto limit measured in the same run: sign + verify of the message, CEK wrap +
  unwrap (ECDH-ES+A256KW over X25519 / RSA-OAEP-256), with ``cryptography`` directly and the
  same keys. Goal ratio 0.8.
* for ``modern`` also beside the floor of the format itself: the same crypto plus what compact
  JWS-in-JWE mandates (base64url of the payload and of the ciphertext, strict decoding of
  both, AES-256-GCM, JSON headers), in straight-line code without any checks, with the
  fastest primitives we have (copy-free decoding, cached JSON codec). The gap to this floor
  is kcbus's own overhead. The floor itself sits near 0.75-0.8 of the bare limit: compact
  JWS signs and verifies base64url(payload), 4/3 of the message, and Ed25519 hashes what it
  signs twice and what it verifies once.
* a 1 GiB attachment (``--quick``: 64 MiB) sealed to a file (``SealedEnvelope.save``) and
  opened to a file in a subprocess: MB/s of size / (seal + open), goal 400. Not one core: the
  envelope code runs each direction as a pipeline over two cores (AES-GCM in the calling
  thread, reading, SHA-256 and writing in helper threads), and ``save`` reads the attachment
  once (hash and encrypt in one pass). Two baselines: the same file passes with bare
  AES-256-GCM + SHA-256 in one thread (hash; read, encrypt, write; read, decrypt, hash, write:
  what one core can do), and the same passes kcbus makes (read, hash + encrypt, write; read,
  decrypt, hash + write) with the same overlap of threads, so that ratio shows the cost of
  the envelope format and code alone. Also the subprocess's peak RSS
  (``getrusage(RUSAGE_CHILDREN)`` of a wrapper whose only child is the worker), goal
  < 150 MB, beside the same worker sealing a message without attachment. The files live in
  ``/dev/shm`` when it exists, so the figure is the envelope code's and not the (shared,
  virtual) disk's. Best of two runs each: first touches of fresh memory in a VM cost more
  than the crypto.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.envelope import Keystore, open_envelope, seal

# The floor uses the same copy-free base64url helpers as the envelope code.
from adapters.envelope._jose import _b64e_view, _check_alphabet, _decode, b64e
from bench import Figure, one_core, rate

PASSPHRASE = "bench"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MiB = 1 << 20

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _message() -> bytes:
    """A 20 KB XML message."""
    body = b"".join(
        b'<eintrag nr="%d"><flurstueck>%05d/%03d</flurstueck><text>Bauantrag Neubau '
        b"Einfamilienhaus mit Garage</text></eintrag>\n" % (i, i * 7, i % 997)
        for i in range(200)
    )
    doc = b'<?xml version="1.0" encoding="UTF-8"?>\n<antrag>\n' + body
    return (doc + b"</antrag>\n")[:20_000]


def _keystores(root: Path, rsa_bits: int) -> dict[str, Keystore]:
    stores = {name: Keystore(root / name, PASSPHRASE) for name in ("a", "b", "c", "d")}
    for name, profile in (
        ("a", "modern"),
        ("b", "modern"),
        ("c", "fitconnect"),
        ("d", "fitconnect"),
    ):
        stores[name].create_identity(name, profile, now=NOW, rsa_bits=rsa_bits)  # type: ignore[arg-type]
    for left, right in (("a", "b"), ("c", "d")):
        stores[left].import_public(right, stores[right].export_public(right), now=NOW)
        stores[right].import_public(left, stores[left].export_public(left), now=NOW)
    return stores


def _concat_kdf(z: bytes) -> bytes:
    alg = b"ECDH-ES+A256KW"
    info = len(alg).to_bytes(4, "big") + alg + bytes(8) + (256).to_bytes(4, "big")
    return hashlib.sha256(b"\x00\x00\x00\x01" + z + info).digest()


def _bare(
    stores: dict[str, Keystore], sender: str, recipient: str, message: bytes
) -> Callable[[], object]:
    """Sign + verify the message, wrap + unwrap a CEK: the asymmetric work of one envelope."""
    sig_info, sign_key = stores[sender].signer(sender, NOW)
    enc_info, enc_key = stores[sender].encrypter(recipient, NOW)
    verifier = stores[recipient].verifier(sig_info.kid)
    decrypter = stores[recipient].decrypter(enc_info.kid)
    assert verifier is not None and decrypter is not None
    verify_key, decrypt_key = verifier[1], decrypter[1]

    if isinstance(sign_key, Ed25519PrivateKey):
        assert isinstance(enc_key, X25519PublicKey) and isinstance(decrypt_key, X25519PrivateKey)
        assert isinstance(verify_key, Ed25519PublicKey)
        ed_verify = verify_key

        def modern() -> object:
            signature = sign_key.sign(message)
            ed_verify.verify(signature, message)
            ephemeral = X25519PrivateKey.generate()
            wrapped = aes_key_wrap(_concat_kdf(ephemeral.exchange(enc_key)), os.urandom(32))
            z = decrypt_key.exchange(ephemeral.public_key())
            return aes_key_unwrap(_concat_kdf(z), wrapped)

        return modern
    assert isinstance(sign_key, RSAPrivateKey) and isinstance(verify_key, RSAPublicKey)
    assert isinstance(enc_key, RSAPublicKey) and isinstance(decrypt_key, RSAPrivateKey)
    rsa_verify, rsa_encrypt, rsa_decrypt = verify_key, enc_key, decrypt_key

    def fitconnect() -> object:
        signature = sign_key.sign(message, _PSS, hashes.SHA512())
        rsa_verify.verify(signature, message, _PSS, hashes.SHA512())
        wrapped = rsa_encrypt.encrypt(os.urandom(32), _OAEP)
        return rsa_decrypt.decrypt(wrapped, _OAEP)

    return fitconnect


def _floor(stores: dict[str, Keystore], message: bytes) -> Callable[[], object]:
    """Compact JWS in compact JWE, straight-line: the crypto plus what the format mandates."""
    sig_info, sign_key = stores["a"].signer("a", NOW)
    enc_info, enc_key = stores["a"].encrypter("b", NOW)
    verifier, decrypter = stores["b"].verifier(sig_info.kid), stores["b"].decrypter(enc_info.kid)
    assert verifier is not None and decrypter is not None
    verify_key, decrypt_key = verifier[1], decrypter[1]
    assert isinstance(sign_key, Ed25519PrivateKey) and isinstance(enc_key, X25519PublicKey)
    assert isinstance(decrypt_key, X25519PrivateKey) and isinstance(verify_key, Ed25519PublicKey)
    jws_header = {
        "alg": "Ed25519",
        "kid": sig_info.kid,
        "typ": "kcbus-message",
        "cty": "application/xml",
        "kcbus": {"v": 1, "id": "x", "iat": 1, "from": "a", "to": "b"},
    }

    def cycle() -> object:
        signing_input = b".".join((b64e(json.dumps(jws_header).encode()), _b64e_view(message)))
        jws = b".".join((signing_input, b64e(sign_key.sign(signing_input))))
        ephemeral = X25519PrivateKey.generate()
        raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        cek = os.urandom(32)
        wrapped = aes_key_wrap(_concat_kdf(ephemeral.exchange(enc_key)), cek)
        aad = b64e(
            json.dumps(
                {
                    "alg": "ECDH-ES+A256KW",
                    "enc": "A256GCM",
                    "kid": enc_info.kid,
                    "epk": {"kty": "OKP", "crv": "X25519", "x": b64e(raw).decode()},
                }
            ).encode()
        )
        iv = os.urandom(12)
        sealed = memoryview(AESGCM(cek).encrypt(iv, jws, aad))
        token = b".".join(
            (aad, b64e(wrapped), b64e(iv), _b64e_view(sealed[:-16]), b64e(sealed[-16:]))
        )
        # open: strict decoding (one alphabet scan per token), no other checks
        _check_alphabet(token, "x")
        d1 = token.find(b".")
        d2 = token.find(b".", d1 + 1)
        d3 = token.find(b".", d2 + 1)
        d4 = token.find(b".", d3 + 1)
        view = memoryview(token)
        header = json.loads(_decode(view[:d1], "x"))
        epk = X25519PublicKey.from_public_bytes(_decode(header["epk"]["x"].encode(), "x"))
        kek = _concat_kdf(decrypt_key.exchange(epk))
        key = aes_key_unwrap(kek, _decode(view[d1 + 1 : d2], "x"))
        plain = AESGCM(key).decrypt(
            _decode(view[d2 + 1 : d3], "x"),
            _decode(view[d3 + 1 : d4], "x", _decode(view[d4 + 1 :], "x")),
            view[:d1],
        )
        _check_alphabet(plain, "x")
        first, last = plain.find(b"."), plain.rfind(b".")
        inner = memoryview(plain)
        verify_key.verify(_decode(inner[last + 1 :], "x"), inner[:last])
        json.loads(_decode(inner[:first], "x"))
        return _decode(inner[first + 1 : last], "x")

    return cycle


def _interleaved(
    first: Callable[[], object], second: Callable[[], object], seconds: float
) -> tuple[float, float]:
    """Best rate of each over alternating rounds: load from other processes hits both."""
    best_first = best_second = 0.0
    for _ in range(6):
        best_first = max(best_first, rate(first, min_seconds=seconds / 2))
        best_second = max(best_second, rate(second, min_seconds=seconds / 2))
    return best_first, best_second


def _messages(stores: dict[str, Keystore], quick: bool) -> Iterable[Figure]:
    message = _message()
    seconds = 0.3 if quick else 1.0
    for profile, sender, recipient in (("modern", "a", "b"), ("fitconnect", "c", "d")):
        keystore, opener = stores[sender], stores[recipient]

        def cycle(
            sender: str = sender,
            recipient: str = recipient,
            keystore: Keystore = keystore,
            opener: Keystore = opener,
        ) -> object:
            data = seal(
                message, sender=sender, recipient=recipient, keystore=keystore, now=NOW
            ).data()
            return open_envelope(data, keystore=opener, now=NOW, replay_guard=None)

        cycle()
        with one_core():
            ours, bare = _interleaved(cycle, _bare(stores, sender, recipient, message), seconds)
        yield Figure(
            f"envelope seal+open 20KB {profile}",
            ours,
            "msgs/s",
            "bare asymmetric crypto (sign+verify+wrap+unwrap)",
            bare,
            goal=0.8,
        )
        if profile == "modern":
            with one_core():
                ours, floor = _interleaved(cycle, _floor(stores, message), seconds)
            yield Figure(
                "envelope seal+open 20KB modern vs format",
                ours,
                "msgs/s",
                "compact JWS-in-JWE floor, no checks",
                floor,
            )


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr)\n"
    "print(done.stdout.strip() if done.returncode == 0 else 'FAILED', "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)

_WORKER = """
import json, sys, time
from datetime import datetime, UTC
from pathlib import Path
from adapters.envelope import Keystore, open_envelope, seal
root, attachment = Path(sys.argv[1]), sys.argv[2]
now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
sender, recipient = Keystore(root / "a", "bench"), Keystore(root / "b", "bench")
sender.unlock(); recipient.unlock()  # the passphrase KDF is not part of the figure
files = [Path(attachment)] if attachment != "-" else []
start = time.perf_counter()
seal(b"<plan/>", sender="a", recipient="b", keystore=sender, now=now,
     attachments=files).save(root / "envelope.kcb")
sealed = time.perf_counter()
opened = open_envelope(root / "envelope.kcb", keystore=recipient, now=now, replay_guard=None,
                       attachments_dir=root / "out")
done = time.perf_counter()
for item in opened.attachments:
    item.path.unlink()
(root / "envelope.kcb").unlink()
print(json.dumps({"seal": sealed - start, "open": done - sealed}))
"""


def _worker(root: Path, attachment: str) -> tuple[dict[str, float], float]:
    """Run one seal+open in a fresh process; its timings and peak RSS in MB."""
    project = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, "-c", _WORKER, str(root), attachment],
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
    )
    report, maxrss = result.stdout.rsplit(" ", 1)
    if report == "FAILED":
        raise RuntimeError(f"envelope worker failed: {result.stderr.strip()[-300:]}")
    return json.loads(report), int(maxrss) / 1024  # ru_maxrss is in KiB on Linux


def _bare_stream(root: Path, source: Path, size: int) -> float:
    """MB/s of the same file passes with bare crypto and no envelope code: hash the file;
    read, AES-256-GCM encrypt, write; read, decrypt, hash, write (in 1 MiB chunks)."""
    aead = AESGCM(os.urandom(32))
    plain = memoryview(bytearray(MiB))
    sealed = memoryview(bytearray(MiB + 16))
    nonce = bytes(12)
    start = time.perf_counter()
    with open(source, "rb") as handle:
        hashlib.file_digest(handle, "sha256")
    with open(source, "rb", buffering=0) as src, open(root / "bare.sealed", "wb") as out:
        while src.readinto(plain):
            aead.encrypt_into(nonce, plain, None, sealed)
            out.write(sealed)
    digest = hashlib.sha256()
    with open(root / "bare.sealed", "rb", buffering=0) as src, open(root / "bare.out", "wb") as out:
        while src.readinto(sealed):
            aead.decrypt_into(nonce, sealed, None, plain)
            digest.update(plain)
            out.write(plain)
    elapsed = time.perf_counter() - start
    (root / "bare.sealed").unlink()
    (root / "bare.out").unlink()
    return size / 1e6 / elapsed


def _bare_stream_threads(root: Path, source: Path, size: int) -> float:
    """MB/s of the passes kcbus makes, with bare crypto and the same overlap: read, then hash
    (helper thread) and encrypt (this thread), then write (helper thread); read, decrypt,
    then hash and write (helper threads); 4 MiB blocks, two buffers taking turns."""
    block = 4 * MiB
    aead = AESGCM(os.urandom(32))
    nonce = bytes(12)
    plains = [memoryview(bytearray(block)) for _ in range(2)]
    sealeds = [memoryview(bytearray(block + 16)) for _ in range(2)]
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as hasher, ThreadPoolExecutor(1) as writer:
        digest = hashlib.sha256()
        pending: list[list[Future[Any]]] = [[], []]
        with open(source, "rb", buffering=0) as src, open(root / "bare.sealed", "wb") as out:
            turn = 0
            while True:
                for job in pending[turn]:
                    job.result()
                n = src.readinto(plains[turn])
                if not n:
                    break
                hashed = hasher.submit(digest.update, plains[turn][:n])
                aead.encrypt_into(nonce, plains[turn][:n], None, sealeds[turn][: n + 16])
                pending[turn] = [hashed, writer.submit(out.write, sealeds[turn][: n + 16])]
                turn ^= 1
            for job in pending[0] + pending[1]:
                job.result()
        digest = hashlib.sha256()
        pending = [[], []]
        with (
            open(root / "bare.sealed", "rb", buffering=0) as src,
            open(root / "bare.out", "wb") as out,
        ):
            turn = 0
            while True:
                for job in pending[turn]:
                    job.result()
                n = src.readinto(sealeds[turn])
                if not n:
                    break
                aead.decrypt_into(nonce, sealeds[turn][:n], None, plains[turn][: n - 16])
                pending[turn] = [
                    hasher.submit(digest.update, plains[turn][: n - 16]),
                    writer.submit(out.write, plains[turn][: n - 16]),
                ]
                turn ^= 1
            for job in pending[0] + pending[1]:
                job.result()
    elapsed = time.perf_counter() - start
    (root / "bare.sealed").unlink()
    (root / "bare.out").unlink()
    return size / 1e6 / elapsed


def _attachment(root: Path, size: int) -> Iterable[Figure]:
    big = root / "plan.tif"
    block = os.urandom(MiB)
    with open(big, "wb") as out:
        for _ in range(size // MiB):
            out.write(block)
    _, baseline_rss = _worker(root, "-")
    # Best of two, alternating with the baseline: the first touch of fresh memory in a VM
    # costs more than the crypto, and the machine is shared.
    speed = bare = threaded = 0.0
    peak_rss = 0.0
    for _ in range(2):
        times, rss = _worker(root, str(big))
        speed = max(speed, size / 1e6 / (times["seal"] + times["open"]))
        peak_rss = max(peak_rss, rss)
        bare = max(bare, _bare_stream(root, big, size))
        threaded = max(threaded, _bare_stream_threads(root, big, size))
    big.unlink()
    label = f"{size // MiB} MiB" if size < 1 << 30 else f"{size >> 30} GiB"
    yield Figure(
        f"envelope attachment {label} seal+open",
        speed,
        "MB/s",
        "same file passes, bare AES-256-GCM + SHA-256",
        bare,
        goal=400,
        goal_on="value",
    )
    yield Figure(
        f"envelope attachment {label} vs threaded bare",
        speed,
        "MB/s",
        "kcbus's passes, bare AES-256-GCM + SHA-256, same threads",
        threaded,
    )
    yield Figure(
        f"envelope attachment {label} peak RSS",
        peak_rss,
        "MB",
        "same process, no attachment",
        baseline_rss,
        goal=150,
        goal_on="value",
        lower_is_better=True,
    )


def run(args: argparse.Namespace) -> Iterable[Figure]:
    quick = bool(getattr(args, "quick", False))
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="kcbus-bench-envelope-", dir=shm) as tmp:
        root = Path(tmp)
        stores = _keystores(root, rsa_bits=3072 if quick else 4096)
        yield from _messages(stores, quick)
        yield from _attachment(root, 64 * MiB if quick else 1 << 30)
