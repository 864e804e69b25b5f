"""Who may open what, and when: recipients, key validity, rotation, revocation, replay; and the
keystore on disk (encrypted private keys, permissions, imports, thumbprints)."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest
from jwcrypto import jwk as jwcrypto_jwk  # type: ignore[import-untyped]

from adapters.envelope import (
    Expired,
    InMemoryReplayGuard,
    Keystore,
    KeystoreError,
    NoUsableKey,
    Replayed,
    RevokedKey,
    UnknownSenderKey,
    UnsupportedAlgorithm,
    WrongPassphrase,
    WrongRecipient,
    open_envelope,
    seal,
)
from adapters.envelope._jose import b64d, b64e

from .conftest import NOW, PASSPHRASE, World

MESSAGE = b"<nachricht>Antrag auf Baugenehmigung</nachricht>"


def _seal(stores: dict[str, Keystore], sender: str = "hospital", recipient: str = "gp",
          **kwargs: object) -> bytes:
    now = kwargs.pop("now", NOW)
    return seal(MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender],
                now=now, **kwargs).data()  # type: ignore[arg-type]


def test_wrong_recipient(stores: dict[str, Keystore]) -> None:
    envelope = _seal(stores, recipient="gp")
    with pytest.raises(WrongRecipient) as caught:
        open_envelope(envelope, keystore=stores["portal"], now=NOW, replay_guard=None)
    assert caught.value.reason_code == "envelope-wrong-recipient"


def test_signed_recipient_stops_surreptitious_forwarding(stores: dict[str, Keystore]) -> None:
    """gp decrypts an envelope meant for it and re-encrypts the signed inside for behoerde:
    behoerde sees a valid hospital signature, but the signed recipient is gp."""
    from adapters.envelope._jose import decrypt, encrypt_compact, parse_jwe

    jwe = parse_jwe(_seal(stores))
    assert jwe.kid is not None
    found = stores["gp"].decrypter(jwe.kid)
    assert found is not None
    signed = decrypt(jwe, found[1])
    info, key = stores["gp"].encrypter("behoerde", NOW)
    forwarded = encrypt_compact({"alg": info.alg, "enc": "A256GCM", "kid": info.kid,
                                 "kcbus": jwe.header["kcbus"]}, signed, key)
    with pytest.raises(WrongRecipient) as caught:
        open_envelope(forwarded, keystore=stores["behoerde"], now=NOW, replay_guard=None)
    assert caught.value.recipient == "gp"


def test_unknown_sender(own_world: World) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    envelope = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital,
                    now=NOW).data()
    (own_world.root / "gp" / "partners" / "hospital.jwks").unlink()
    gp.refresh(force=True)
    with pytest.raises(UnknownSenderKey):
        open_envelope(envelope, keystore=gp, now=NOW, replay_guard=None)


def test_replay_is_reported_as_duplicate(stores: dict[str, Keystore]) -> None:
    envelope = _seal(stores)
    guard = InMemoryReplayGuard()
    first = open_envelope(envelope, keystore=stores["gp"], now=NOW, replay_guard=guard)
    with pytest.raises(Replayed) as caught:
        open_envelope(envelope, keystore=stores["gp"], now=NOW + timedelta(minutes=1),
                      replay_guard=guard)
    assert caught.value.envelope_id == first.envelope_id
    assert caught.value.reason_code == "envelope-replayed"


def test_replay_window_and_age(stores: dict[str, Keystore]) -> None:
    envelope = _seal(stores)
    guard = InMemoryReplayGuard(window=timedelta(days=7, minutes=5))
    open_envelope(envelope, keystore=stores["gp"], now=NOW, replay_guard=guard)
    # Long after, the guard has forgotten the ID, but the time window still refuses it.
    for day in range(1, 10):
        guard.remember(f"other-{day}", NOW + timedelta(days=day))
    assert not guard.seen(_peek_id(envelope))
    with pytest.raises(Expired) as caught:
        open_envelope(envelope, keystore=stores["gp"], now=NOW + timedelta(days=8),
                      replay_guard=guard)
    assert caught.value.what == "envelope-too-old"


def _peek_id(envelope: bytes) -> str:
    from adapters.envelope import peek_envelope

    envelope_id = peek_envelope(envelope).envelope_id
    assert envelope_id is not None
    return envelope_id


def test_envelope_from_the_future(stores: dict[str, Keystore]) -> None:
    envelope = _seal(stores, now=NOW + timedelta(hours=1))
    with pytest.raises(Expired) as caught:
        open_envelope(envelope, keystore=stores["gp"], now=NOW, replay_guard=None)
    assert caught.value.what == "envelope-from-future"


def test_sender_key_expired_when_sealed(own_world: World) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    envelope = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital,
                    now=NOW).data()
    # gp learns (from a newer key set) that hospital's keys expired an hour before.
    jwks = hospital.export_public("hospital")
    for key in jwks["keys"]:
        key["exp"] = int((NOW - timedelta(hours=1)).timestamp())
    gp.import_public("hospital", jwks, now=NOW)
    with pytest.raises(Expired) as caught:
        open_envelope(envelope, keystore=gp, now=NOW, replay_guard=None)
    assert caught.value.what == "key-expired"
    with pytest.raises(NoUsableKey):  # and nobody seals for expired keys
        seal(MESSAGE, sender="gp", recipient="hospital", keystore=gp, now=NOW)


@pytest.mark.parametrize("whose", ["sender", "recipient"])
def test_revoked_keys(own_world: World, whose: str) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW)
    if whose == "sender":
        gp.revoke("hospital", sealed.signing_kid, now=NOW, reason="key compromise")
    else:
        gp.revoke("gp", sealed.encryption_kid, now=NOW, reason="key compromise")
    with pytest.raises(RevokedKey) as caught:
        open_envelope(sealed.data(), keystore=gp, now=NOW, replay_guard=None)
    assert caught.value.reason_code == "envelope-key-revoked"
    # Revocation travels with the exported set and sticks through a later import.
    if whose == "recipient":
        hospital.import_public("gp", gp.export_public("gp"), now=NOW)
        key = hospital.key(sealed.encryption_kid)
        assert key is not None and key.status(NOW) == "revoked"
        fresh = json.loads(json.dumps(gp.export_public("gp")))
        for item in fresh["keys"]:
            item.pop("revoked", None)
        hospital.import_public("gp", fresh, now=NOW)
        key = hospital.key(sealed.encryption_kid)
        assert key is not None and key.status(NOW) == "revoked"


def test_rotation_keeps_old_envelopes_open_during_the_overlap(own_world: World) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    old = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW)

    later = NOW + timedelta(hours=1)
    gp.rotate("gp", now=later, overlap=timedelta(days=2))
    hospital.rotate("hospital", now=later, overlap=timedelta(days=2))
    gp.import_public("hospital", hospital.export_public("hospital"), now=later)
    hospital.import_public("gp", gp.export_public("gp"), now=later)

    # the envelope sealed with the old keys before the rotation still opens
    opened = open_envelope(old.data(), keystore=gp, now=later, replay_guard=None)
    assert opened.signing_kid == old.signing_kid
    # new envelopes use the new keys on both sides
    new = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=later)
    assert new.signing_kid != old.signing_kid and new.encryption_kid != old.encryption_kid
    assert open_envelope(new.data(), keystore=gp, now=later, replay_guard=None).message == MESSAGE
    statuses = {k.kid: k.status(later + timedelta(days=3)) for k in gp.keys("gp")}
    assert statuses[old.encryption_kid] == "expired"
    assert statuses[new.encryption_kid] == "active"


def test_pre_staged_rotation_switches_at_not_before(own_world: World) -> None:
    gp = own_world.keystore("gp")
    switch = NOW + timedelta(days=3)
    gp.rotate("gp", now=NOW, not_before=switch, overlap=timedelta(days=1))
    before, _ = gp.signer("gp", NOW)
    after, _ = gp.signer("gp", switch + timedelta(hours=1))
    assert before.kid != after.kid
    assert after.not_before == switch


def test_unsupported_algorithms_are_refused(stores: dict[str, Keystore]) -> None:
    token = _seal(stores).decode().split(".")
    for change in ({"enc": "A128CBC-HS256"}, {"alg": "RSA1_5"}, {"zip": "DEF"},
                   {"crit": ["exp"]}):
        header = json.loads(b64d(token[0].encode(), "x"))
        header.update(change)
        changed = ".".join([b64e(json.dumps(header).encode()).decode(), *token[1:]]).encode()
        with pytest.raises(UnsupportedAlgorithm):
            open_envelope(changed, keystore=stores["gp"], now=NOW, replay_guard=None)


# --- the keystore on disk --------------------------------------------------------------------


def test_private_keys_are_encrypted_and_private(world: World) -> None:
    root = world.root / "hospital"
    files = list((root / "private" / "hospital").glob("*.jwe"))
    assert len(files) == 2
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert file.read_bytes().count(b".") == 4  # a compact JWE, not a JWK
    assert stat.S_IMODE((root / "private").stat().st_mode) == 0o700
    public = (root / "partners" / "hospital.jwks").read_text()
    assert '"d"' not in public


def test_passphrase_sources(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WrongPassphrase):
        Keystore(world.root / "gp", "wrong").signer("gp", NOW)
    monkeypatch.setenv("KCBUS_KEYSTORE_PASSPHRASE", PASSPHRASE)
    info, _ = Keystore(world.root / "gp").signer("gp", NOW)
    monkeypatch.delenv("KCBUS_KEYSTORE_PASSPHRASE")
    asked: list[int] = []

    def secrets_backend() -> str:
        asked.append(1)
        return PASSPHRASE

    hook = Keystore(world.root / "gp", secrets_backend)
    assert hook.signer("gp", NOW)[0] == info and asked == [1]
    # public-key work needs no passphrase at all
    assert Keystore(world.root / "gp").export_public("gp")["keys"]


def test_kids_are_rfc7638_thumbprints(world: World) -> None:
    for key in Keystore(world.root / "portal").export_public("portal")["keys"]:
        material = {k: v for k, v in key.items() if k in ("kty", "crv", "x", "n", "e")}
        assert key["kid"] == jwcrypto_jwk.JWK(**material).thumbprint()


def test_import_validates_key_sets(own_world: World) -> None:
    gp = own_world.keystore("gp")
    hospital_set = gp.export_public("hospital")
    with pytest.raises(KeystoreError, match="private key material"):
        gp.import_public("x", {"keys": [{**hospital_set["keys"][0], "d": "AAAA"}]}, now=NOW)
    weak = jwcrypto_jwk.JWK.generate(kty="RSA", size=2048).export_public(as_dict=True)
    with pytest.raises(KeystoreError, match="3072"):
        gp.import_public("x", {"keys": [{**weak, "use": "sig"}]}, now=NOW)
    with pytest.raises(KeystoreError, match="identity of this keystore"):
        gp.import_public("gp", hospital_set, now=NOW)
    with pytest.raises(KeystoreError, match="already belongs"):
        gp.import_public("impostor", hospital_set, now=NOW)
    with pytest.raises(KeystoreError, match="bad partner ID"):
        gp.import_public("../etc", hospital_set, now=NOW)
