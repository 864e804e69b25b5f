"""Importing a partner's key set: new keys come in with the set's dates, a known key's validity
can only shrink. An old export must not make a key that a rotation cut short valid again."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.envelope import Expired, Keystore, NoUsableKey, open_envelope, seal
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
