"""kcbus envelopes are standard JOSE: two independent libraries (jwcrypto and joserfc) open and
verify them with nothing but the keys, and kcbus opens what jwcrypto seals."""

from __future__ import annotations

import json
import warnings

import pytest
from joserfc import jwe as joserfc_jwe
from joserfc import jws as joserfc_jws
from joserfc.jwk import import_key
from jwcrypto import jwe as jwcrypto_jwe  # type: ignore[import-untyped]
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from adapters.envelope import Keystore, open_envelope, seal

from .conftest import NOW

MESSAGE = "<?xml version='1.0'?><antrag>Führungszeugnis für Frau Müller</antrag>".encode()
CASES = [pytest.param("hospital", "gp", id="modern"),
         pytest.param("portal", "behoerde", id="fitconnect")]


def _keys(stores: dict[str, Keystore], sender: str, recipient: str, kid: str,
          signing_kid: str) -> tuple[jwcrypto_jwk.JWK, jwcrypto_jwk.JWK]:
    """The recipient's private decryption key and the sender's public JWK, as a partner's
    own software would hold them."""
    info = stores[recipient].key(kid)
    assert info is not None
    found = stores[recipient].decrypter(kid)
    assert found is not None
    private = jwcrypto_jwk.JWK.from_pyca(found[1])
    public = next(k for k in stores[recipient].export_public(sender)["keys"]
                  if k["kid"] == signing_kid)
    return private, jwcrypto_jwk.JWK(**public)


@pytest.mark.parametrize(("sender", "recipient"), CASES)
def test_jwcrypto_opens_and_verifies(stores: dict[str, Keystore], sender: str,
                                     recipient: str) -> None:
    sealed = seal(MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender], now=NOW)
    private, public = _keys(stores, sender, recipient, sealed.encryption_kid, sealed.signing_kid)

    outer = jwcrypto_jwe.JWE()
    outer.deserialize(sealed.data().decode(), key=private)
    header = outer.jose_header
    assert header["kid"] == sealed.encryption_kid and header["cty"] == "JOSE"
    assert header["alg"] == ("RSA-OAEP-256" if recipient == "behoerde" else "ECDH-ES+A256KW")
    assert header["enc"] == "A256GCM"

    inner = jwcrypto_jws.JWS()
    inner.deserialize(outer.payload.decode())
    inner.verify(public)
    assert inner.payload == MESSAGE
    assert inner.jose_header["alg"] == ("PS512" if sender == "portal" else "Ed25519")
    assert inner.jose_header["kcbus"]["to"] == recipient


@pytest.mark.parametrize(("sender", "recipient"), CASES)
def test_joserfc_opens_and_verifies(stores: dict[str, Keystore], sender: str,
                                    recipient: str) -> None:
    sealed = seal(MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender], now=NOW)
    found = stores[recipient].decrypter(sealed.encryption_kid)
    assert found is not None
    public = next(k for k in stores[recipient].export_public(sender)["keys"]
                  if k["kid"] == sealed.signing_kid)
    registry = joserfc_jwe.JWERegistry(
        algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"], strict_check_header=False
    )
    signatures = joserfc_jws.JWSRegistry(algorithms=["Ed25519", "PS512"],
                                         strict_check_header=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about RSA-OAEP-256 defaults
        private = jwcrypto_jwk.JWK.from_pyca(found[1]).export_private(as_dict=True)
        outer = joserfc_jwe.decrypt_compact(sealed.data(), import_key(private),
                                            registry=registry)
        assert outer.plaintext is not None
        inner = joserfc_jws.deserialize_compact(outer.plaintext, import_key(public),  # type: ignore[arg-type]
                                                registry=signatures)
    assert inner.payload == MESSAGE


@pytest.mark.parametrize(("sender", "recipient"), CASES)
def test_kcbus_opens_what_jwcrypto_seals(stores: dict[str, Keystore], sender: str,
                                         recipient: str) -> None:
    """A partner without kcbus builds the envelope from the documented headers."""
    enc_info, enc_key = stores[sender].encrypter(recipient, NOW)
    sig_info, _ = stores[sender].signer(sender, NOW)
    sign_key = stores[sender]._private_key(sig_info)  # the partner's own key, from its HSM
    facts = {"v": 1, "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
             "iat": int(NOW.timestamp()), "from": sender, "to": recipient}

    inner = jwcrypto_jws.JWS(MESSAGE)
    inner.add_signature(jwcrypto_jwk.JWK.from_pyca(sign_key), alg=sig_info.alg,
                        protected=json.dumps({"alg": sig_info.alg, "kid": sig_info.kid,
                                              "typ": "kcbus-message",
                                              "cty": "application/xml", "kcbus": facts}))
    outer = jwcrypto_jwe.JWE(
        inner.serialize(compact=True).encode(),
        protected=json.dumps({"alg": enc_info.alg, "enc": "A256GCM", "kid": enc_info.kid,
                              "cty": "JOSE", "kcbus": {"v": 1, "id": facts["id"]}}),
    )
    outer.add_recipient(jwcrypto_jwk.JWK.from_pyca(enc_key))
    envelope = outer.serialize(compact=True).encode()

    opened = open_envelope(envelope, keystore=stores[recipient], now=NOW, replay_guard=None)
    assert opened.message == MESSAGE
    assert (opened.sender, opened.envelope_id) == (sender, facts["id"])
