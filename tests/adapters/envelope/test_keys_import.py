"""Importing a partner's key set: new keys come in with the set's dates, a known key's validity
can only shrink. An old export must not make a key that a rotation cut short valid again. A key
ID names one key of one partner for good: a set that swaps a known key, or offers somebody
else's, is refused whole and changes nothing."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from adapters.envelope import Expired, Keystore, KeystoreError, NoUsableKey, open_envelope, seal
from adapters.envelope._errors import KeyConflict
from adapters.envelope._keys import to_ts

from .conftest import NOW, PASSPHRASE, World

MESSAGE = b"<nachricht>Antrag</nachricht>"
DAY = timedelta(days=1)


def _kept_stored_validity(root: Path) -> set[str]:
    """The keys the last import kept the stored validity of, from its keystore.log line."""
    entry = json.loads((root / "keystore.log").read_text().splitlines()[-1])
    assert entry["event"] == "imported"
    return set(entry["kept_stored_validity"])


def _by_kid(store: Keystore, partner: str) -> dict[str, dict[str, object]]:
    return {str(jwk["kid"]): jwk for jwk in store.export_public(partner)["keys"]}


def _files(root: Path) -> dict[Path, bytes]:
    """Every key file of a keystore directory (key sets, private keys; not keystore.log)."""
    return {
        path: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and path.name != "keystore.log"
    }


def _last_audit(root: Path) -> dict[str, object]:
    entry: dict[str, object] = json.loads((root / "keystore.log").read_text().splitlines()[-1])
    return entry


def _other_ed25519_key() -> dict[str, object]:
    return dict(OKPKey.generate_key("Ed25519").as_dict(private=False))


def test_an_old_key_set_does_not_extend_a_rotated_key(own_world: World, tmp_path: Path) -> None:
    """hospital rotates (say its old key leaked); somebody later imports the key set hospital
    exported before the rotation, in which the old keys were valid for two years."""
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    old_set = hospital.export_public("hospital")
    leaked = tmp_path / "hospital-before-rotation"
    shutil.copytree(own_world.root / "hospital", leaked)
    old = {info.kid for info in hospital.keys("hospital")}
    hospital.rotate("hospital", now=NOW, overlap=DAY)
    gp.import_public("hospital", hospital.export_public("hospital"), now=NOW)
    assert {k.kid: k.expires for k in gp.keys("hospital") if k.kid in old} == dict.fromkeys(
        old, NOW + DAY
    )
    after_rotation = _by_kid(gp, "hospital")

    gp.import_public("hospital", old_set, now=NOW + 2 * DAY)

    assert _by_kid(gp, "hospital") == after_rotation
    assert _kept_stored_validity(own_world.root / "gp") == old
    # What the old signing key signs after the cut stays refused.
    forged = seal(
        MESSAGE,
        sender="hospital",
        recipient="gp",
        keystore=Keystore(leaked, PASSPHRASE),
        now=NOW + 2 * DAY,
    )
    with pytest.raises(Expired) as caught:
        open_envelope(forged.data(), keystore=gp, now=NOW + 2 * DAY, replay_guard=None)
    assert caught.value.what == "key-expired"


def test_a_shorter_validity_is_imported(own_world: World) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    jwks = hospital.export_public("hospital")
    sig = next(key for key in jwks["keys"] if key["use"] == "sig")
    enc = next(key for key in jwks["keys"] if key["use"] == "enc")
    sig["exp"] = to_ts(NOW + DAY)  # ends earlier
    enc["nbf"] = to_ts(NOW + 3 * DAY)  # starts later

    gp.import_public("hospital", jwks, now=NOW)

    infos = {info.kid: info for info in gp.keys("hospital")}
    assert infos[str(sig["kid"])].expires == NOW + DAY
    assert infos[str(enc["kid"])].not_before == NOW + 3 * DAY
    assert infos[str(enc["kid"])].status(NOW) == "pending"
    with pytest.raises(NoUsableKey):  # gp has no hospital key to seal for until then
        seal(MESSAGE, sender="gp", recipient="hospital", keystore=gp, now=NOW)
    assert _kept_stored_validity(own_world.root / "gp") == set()


def test_a_set_without_dates_leaves_the_stored_ones(own_world: World) -> None:
    """A missing ``nbf`` or ``exp`` means unbounded: longer than any stored bound."""
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    before = _by_kid(gp, "hospital")
    jwks = hospital.export_public("hospital")
    for key in jwks["keys"]:
        del key["nbf"], key["exp"]

    gp.import_public("hospital", jwks, now=NOW)

    assert _by_kid(gp, "hospital") == before
    assert _kept_stored_validity(own_world.root / "gp") == set(before)


def test_new_keys_come_in_with_the_sets_dates(own_world: World, tmp_path: Path) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    # a pre-staged rotation: new keys from tomorrow, the old ones until the day after
    hospital.rotate("hospital", now=NOW, overlap=DAY, not_before=NOW + DAY)
    exported = hospital.export_public("hospital")
    gp.import_public("hospital", exported, now=NOW)
    assert _by_kid(gp, "hospital") == {str(key["kid"]): key for key in exported["keys"]}

    # a partner without an end date, and later one: unbounded keys may get a bound
    amt = Keystore(tmp_path / "amt", PASSPHRASE)
    amt.create_identity("amt", "modern", now=NOW, valid_for=None)
    gp.import_public("amt", amt.export_public("amt"), now=NOW)
    assert _by_kid(gp, "amt") == _by_kid(amt, "amt")
    assert all(info.expires is None for info in gp.keys("amt"))
    amt.rotate("amt", now=NOW + DAY, overlap=DAY, valid_for=None)
    gp.import_public("amt", amt.export_public("amt"), now=NOW + DAY)
    assert _by_kid(gp, "amt") == _by_kid(amt, "amt")
    assert sorted(info.expires is None for info in gp.keys("amt")) == [False, False, True, True]


# --- a key ID names one key of one partner -----------------------------------------------------


def test_a_known_kid_with_other_key_material_is_refused(own_world: World) -> None:
    """Whoever hands gp's operator a hospital key set puts their own key under the ID of
    hospital's signing key, beside a genuine new one."""
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    genuine = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW)
    jwks = hospital.export_public("hospital")
    sig = next(key for key in jwks["keys"] if key["use"] == "sig")
    stored_x, forged = sig["x"], _other_ed25519_key()
    sig["x"] = forged["x"]
    jwks["keys"].append({**_other_ed25519_key(), "use": "sig", "kid": "new-and-harmless"})
    before = _files(own_world.root / "gp")

    with pytest.raises(KeyConflict) as caught:
        gp.import_public("hospital", jwks, now=NOW)

    assert (caught.value.partner, caught.value.kid, caught.value.conflict) == (
        "hospital",
        sig["kid"],
        "key",
    )
    text = str(caught.value)
    assert "hospital" in text and str(sig["kid"]) in text
    assert str(stored_x) not in text and str(forged["x"]) not in text
    assert _files(own_world.root / "gp") == before
    refused = _last_audit(own_world.root / "gp")  # a security event, in the audit trail
    assert {k: refused[k] for k in ("event", "partner", "kid", "conflict")} == {
        "event": "import-refused",
        "partner": "hospital",
        "kid": sig["kid"],
        "conflict": "key",
    }
    log = (own_world.root / "gp" / "keystore.log").read_text()
    assert str(stored_x) not in log and str(forged["x"]) not in log
    assert gp.key("new-and-harmless") is None
    # gp, and a process that reads the keystore afresh, still verify with hospital's key.
    for store in (gp, own_world.keystore("gp")):
        opened = open_envelope(genuine.data(), keystore=store, now=NOW, replay_guard=None)
        assert opened.message == MESSAGE


def test_a_known_kid_with_another_use_is_refused(own_world: World) -> None:
    """portal's RSA signing key offered as its encryption key: same material, same ID."""
    gp = own_world.keystore("gp")
    jwks = gp.export_public("portal")
    sig = next(key for key in jwks["keys"] if key["use"] == "sig")
    sig["use"], sig["alg"] = "enc", "RSA-OAEP-256"
    before = _files(own_world.root / "gp")

    with pytest.raises(KeyConflict) as caught:
        gp.import_public("portal", jwks, now=NOW)

    assert caught.value.conflict == "use"
    assert (caught.value.known, caught.value.offered) == ("sig", "enc")
    assert _files(own_world.root / "gp") == before


def test_eddsa_and_ed25519_name_the_same_algorithm(own_world: World) -> None:
    """RFC 9864 §2.2: a partner whose software moves between the two names changes nothing."""
    gp = own_world.keystore("gp")
    before = _by_kid(gp, "hospital")
    jwks = gp.export_public("hospital")
    for key in jwks["keys"]:
        if key["use"] == "sig":
            key["alg"] = "EdDSA"

    gp.import_public("hospital", jwks, now=NOW)

    assert _by_kid(gp, "hospital") == before


def test_a_set_cannot_reorder_keys_by_their_issue_date(own_world: World) -> None:
    gp = own_world.keystore("gp")
    before = _by_kid(gp, "hospital")
    jwks = gp.export_public("hospital")
    for key in jwks["keys"]:
        key["iat"] = 2_000_000_000  # later: iat orders keys of the same nbf

    gp.import_public("hospital", jwks, now=NOW)

    assert _by_kid(gp, "hospital") == before


def test_re_importing_the_same_set_changes_no_key(own_world: World) -> None:
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    stored = own_world.root / "gp" / "partners" / "hospital.jwks"
    before = stored.read_bytes()

    for _ in range(2):
        infos = gp.import_public("hospital", hospital.export_public("hospital"), now=NOW)

    assert stored.read_bytes() == before
    assert infos == gp.keys("hospital")
    assert _kept_stored_validity(own_world.root / "gp") == set()


@pytest.mark.parametrize("material", ["theirs", "other"])
def test_a_kid_of_another_partner_is_refused(own_world: World, material: str) -> None:
    gp = own_world.keystore("gp")
    hospital_sig = next(k for k in gp.export_public("hospital")["keys"] if k["use"] == "sig")
    offered = (
        hospital_sig
        if material == "theirs"
        else {**_other_ed25519_key(), "kid": hospital_sig["kid"], "use": "sig"}
    )
    before = _files(own_world.root / "gp")

    with pytest.raises(KeyConflict, match="already belongs to partner hospital") as caught:
        gp.import_public("impostor", {"keys": [offered]}, now=NOW)

    assert (caught.value.conflict, caught.value.holder) == ("partner", "hospital")
    assert _files(own_world.root / "gp") == before
    assert "impostor" not in gp.partners()


def test_importing_never_touches_our_own_keys(own_world: World) -> None:
    """Our own identity's keys can come in neither as a partner's (by ID or, under a new ID,
    by key material) nor be replaced under their own IDs."""
    gp = own_world.keystore("gp")
    ours = gp.export_public("gp")
    our_sig = next(key for key in ours["keys"] if key["use"] == "sig")
    foreign_under_our_kid = {**_other_ed25519_key(), "kid": our_sig["kid"], "use": "sig"}
    our_key_under_new_kid = {**our_sig, "kid": "looks-new"}
    before = _files(own_world.root / "gp")

    with pytest.raises(KeystoreError, match="identity of this keystore"):
        gp.import_public("gp", {"keys": [foreign_under_our_kid]}, now=NOW)
    with pytest.raises(KeyConflict) as by_kid:
        gp.import_public("impostor", {"keys": [foreign_under_our_kid]}, now=NOW)
    with pytest.raises(KeyConflict) as by_material:
        gp.import_public("impostor", {"keys": [our_key_under_new_kid]}, now=NOW)

    assert (by_kid.value.conflict, by_kid.value.holder) == ("partner", "gp")
    assert (by_material.value.holder, by_material.value.other_kid) == ("gp", our_sig["kid"])
    assert _files(own_world.root / "gp") == before
    assert gp.export_public("gp") == ours
    info, _ = gp.signer("gp", NOW)
    assert info.kid == our_sig["kid"]


def test_a_revoked_key_does_not_come_back_under_a_new_kid(own_world: World) -> None:
    gp = own_world.keystore("gp")
    sig = next(k for k in gp.export_public("hospital")["keys"] if k["use"] == "sig")
    gp.revoke("hospital", str(sig["kid"]), now=NOW, reason="key compromise")
    renamed = {k: v for k, v in sig.items() if k != "revoked"} | {"kid": "brand-new"}

    with pytest.raises(KeyConflict) as caught:
        gp.import_public("hospital", {"keys": [renamed]}, now=NOW)

    assert (caught.value.holder, caught.value.other_kid) == ("hospital", sig["kid"])
    assert gp.key("brand-new") is None


def test_a_set_listing_a_kid_twice_is_refused(own_world: World) -> None:
    gp = own_world.keystore("gp")
    jwks = gp.export_public("hospital")
    sig = next(key for key in jwks["keys"] if key["use"] == "sig")
    jwks["keys"].append({**_other_ed25519_key(), "kid": sig["kid"], "use": "sig"})
    before = _files(own_world.root / "gp")

    with pytest.raises(KeyConflict) as caught:
        gp.import_public("hospital", jwks, now=NOW)

    assert (caught.value.kid, caught.value.conflict) == (sig["kid"], "duplicate")
    assert _files(own_world.root / "gp") == before


def test_a_conflict_in_a_keystore_not_written_yet_is_still_the_conflict(
    own_world: World, tmp_path: Path
) -> None:
    """The audit line is best effort: with no keystore folder yet there is no log to write,
    and the operator must still see the conflict, not a file error."""
    jwks = own_world.keystore("gp").export_public("hospital")
    jwks["keys"].append(dict(jwks["keys"][0]))
    fresh = Keystore(tmp_path / "not-yet", PASSPHRASE)

    with pytest.raises(KeyConflict) as caught:
        fresh.import_public("hospital", jwks, now=NOW)

    assert caught.value.conflict == "duplicate"
