"""Pruning retired keys: only what no envelope a partner may still legitimately send can need,
never an identity's current keys, and a pruned key never comes back by a re-import."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.envelope import (
    DEFAULT_MAX_AGE,
    DEFAULT_OVERLAP,
    DEFAULT_PRUNE_GRACE,
    Attachment,
    Expired,
    Keystore,
    NoSuchPartner,
    UnknownSenderKey,
    open_envelope,
    seal,
)
from adapters.envelope._errors import KeyConflict
from adapters.envelope._keys import DEFAULT_KEEP_PRIVATE

from .conftest import NOW, PASSPHRASE, World

MESSAGE = b"<nachricht>Antrag</nachricht>"
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
#: Only the in-transit grace: what an envelope on its way needs, nothing for stored ones.
NO_KEEP = timedelta(0)


def _kids(store: Keystore, partner: str) -> set[str]:
    return {info.kid for info in store.keys(partner)}


def _rotate_hospital(world: World, overlap: timedelta) -> tuple[Keystore, Keystore, set[str]]:
    """hospital rotates at NOW; gp imports the new set. Gives (hospital, gp, old kids)."""
    hospital, gp = world.keystore("hospital"), world.keystore("gp")
    old = _kids(hospital, "hospital")
    hospital.rotate("hospital", now=NOW, overlap=overlap)
    gp.import_public("hospital", hospital.export_public("hospital"), now=NOW)
    return hospital, gp, old


def test_an_envelope_sealed_just_before_retirement_opens_until_the_prune(
    own_world: World,
) -> None:
    hospital = own_world.keystore("hospital")
    last = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW - SECOND)
    hospital, gp, old = _rotate_hospital(own_world, overlap=timedelta(0))

    # The oldest moment the envelope still opens: prune first, then open.
    latest = NOW - SECOND + DEFAULT_MAX_AGE
    assert gp.prune(now=latest, keep_private=NO_KEEP) == []
    assert open_envelope(last.data(), keystore=gp, now=latest, replay_guard=None)

    # Once retired keys are past the grace, they go: the envelope was too old by then anyway
    # (afterwards it is still refused, as from an unknown key).
    after = NOW + DEFAULT_PRUNE_GRACE
    with pytest.raises(Expired):
        open_envelope(last.data(), keystore=gp, now=after, replay_guard=None)
    removed = gp.prune(now=after, keep_private=NO_KEEP)
    assert {k.info.kid for k in removed} == old
    assert all(k.public and not k.private for k in removed)
    assert _kids(gp, "hospital").isdisjoint(old)
    with pytest.raises(UnknownSenderKey):
        open_envelope(last.data(), keystore=gp, now=after, replay_guard=None)


def test_our_retired_private_keys_go_with_their_public_halves(own_world: World) -> None:
    gp = own_world.keystore("gp")
    old = _kids(gp, "gp")
    gp.rotate("gp", now=NOW, overlap=2 * DAY)
    root = own_world.root / "gp"

    def files() -> set[str]:
        return {p.name.removesuffix(".jwe") for p in root.glob("private*/gp/*.jwe")}

    assert len(files()) == 4

    end = NOW + 2 * DAY + DEFAULT_PRUNE_GRACE
    assert gp.prune(now=end - SECOND, keep_private=NO_KEEP) == []
    removed = gp.prune(now=end, keep_private=NO_KEEP)
    assert {k.info.kid for k in removed} == old
    assert all(k.private and k.public for k in removed)
    assert files() == _kids(gp, "gp") and files().isdisjoint(old)
    assert all(gp.decrypter(kid) is None for kid in old)
    # what the new keys sealed still opens
    hospital = own_world.keystore("hospital")
    hospital.import_public("gp", gp.export_public("gp"), now=NOW + 30 * DAY)
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=hospital, now=NOW + 30 * DAY)
    assert open_envelope(sealed.data(), keystore=gp, now=NOW + 30 * DAY, replay_guard=None)

    log = [json.loads(line) for line in (root / "keystore.log").read_text().splitlines()]
    assert log[-1]["event"] == "pruned" and set(log[-1]["private"]) == old


def test_current_keys_are_never_pruned(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "amt", PASSPHRASE)
    store.create_identity("amt", "modern", now=NOW, valid_for=DAY)
    assert store.prune(now=NOW + 10 * 365 * DAY) == []
    assert store.signer("amt", NOW)  # still there, though long expired


def test_a_revocation_is_published_until_the_key_would_have_expired(own_world: World) -> None:
    gp = own_world.keystore("gp")
    gp.rotate("gp", now=NOW, overlap=DAY)
    newest_enc = next(k for k in gp.keys("gp") if k.use == "enc")
    gp.revoke("gp", newest_enc.kid, now=NOW, reason="key compromise")
    assert newest_enc.expires is not None

    removed = gp.prune(now=NOW + DEFAULT_PRUNE_GRACE, partner="gp")
    revoked = [k for k in removed if k.info.kid == newest_enc.kid]
    assert revoked and revoked[0].private and not revoked[0].public
    exported = {k["kid"]: k for k in gp.export_public("gp")["keys"]}
    assert "revoked" in exported[newest_enc.kid]  # partners still learn of the revocation
    assert gp.decrypter(newest_enc.kid) is None

    removed = gp.prune(now=newest_enc.expires + DEFAULT_PRUNE_GRACE, partner="gp")
    assert newest_enc.kid in {k.info.kid for k in removed if k.public}
    assert newest_enc.kid not in _kids(gp, "gp")
    # the only unrevoked encryption key left is kept: the identity's current one
    assert [k.use for k in gp.keys("gp")].count("enc") == 1


def test_a_pruned_key_never_comes_back(own_world: World) -> None:
    # hospital's key set as exported before the rotation: the old keys valid for two years
    old_set = own_world.keystore("hospital").export_public("hospital")
    _, gp, old = _rotate_hospital(own_world, overlap=DAY)
    gp.prune(now=NOW + DAY + DEFAULT_PRUNE_GRACE, keep_private=NO_KEEP)
    assert _kids(gp, "hospital").isdisjoint(old)

    gp.import_public("hospital", old_set, now=NOW + 30 * DAY)
    assert _kids(gp, "hospital").isdisjoint(old)
    with pytest.raises(KeyConflict, match="already belongs to partner hospital"):
        gp.import_public("impostor", old_set, now=NOW + 30 * DAY)
    # Nor under new key IDs: a kcbus key's ID is its thumbprint, which gp still remembers.
    renamed = {"keys": [{**key, "kid": f"renamed-{key['kid']}"} for key in old_set["keys"]]}
    with pytest.raises(KeyConflict) as caught:
        gp.import_public("hospital", renamed, now=NOW + 30 * DAY)
    assert caught.value.other_kid in old
    assert _kids(gp, "hospital").isdisjoint(old)


def test_dry_run_changes_nothing(own_world: World) -> None:
    _, gp, old = _rotate_hospital(own_world, overlap=DAY)
    root = own_world.root / "gp"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    planned = gp.prune(now=NOW + DAY + DEFAULT_PRUNE_GRACE, keep_private=NO_KEEP, dry_run=True)
    assert {k.info.kid for k in planned} == old
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(NoSuchPartner):
        gp.prune(now=NOW, partner="nobody")


def test_a_stored_envelope_reopens_after_both_sides_rotated_and_pruned(
    own_world: World, tmp_path: Path
) -> None:
    """The resend case: the bus (gp here) opens a weeks-old inbound envelope from its ledger
    again to re-seal its attachments. Both sides rotated since; pruning in between must keep
    our old decryption key and the sender's old signing key, nothing else."""
    hospital, gp = own_world.keystore("hospital"), own_world.keystore("gp")
    scan = tmp_path / "plan.pdf"
    scan.write_bytes(b"%PDF-1.7 Lageplan")
    created = NOW - SECOND
    stored = seal(
        MESSAGE,
        sender="hospital",
        recipient="gp",
        keystore=hospital,
        now=created,
        attachments=[Attachment(scan)],
    ).data()
    old_gp, old_hospital = _kids(gp, "gp"), _kids(hospital, "hospital")
    gp.rotate("gp", now=NOW)
    hospital.rotate("hospital", now=NOW)
    gp.import_public("hospital", hospital.export_public("hospital"), now=NOW)

    three_weeks = NOW + DEFAULT_OVERLAP + DEFAULT_PRUNE_GRACE + DAY
    removed = {k.info.kid: k for k in gp.prune(now=three_weeks)}
    # What nothing needs any more goes after the short grace: our old signing key (both
    # halves) and the sender's old encryption key; the two that re-open stay.
    gone_gp = {removed[kid].info.use for kid in old_gp if kid in removed}
    gone_hospital = {removed[kid].info.use for kid in old_hospital if kid in removed}
    assert gone_gp == {"sig"} and gone_hospital == {"enc"}
    reopened = open_envelope(
        stored, keystore=gp, now=created, replay_guard=None, attachments_dir=tmp_path / "out"
    )
    assert reopened.message == MESSAGE
    assert [a.path.read_bytes() for a in reopened.attachments] == [scan.read_bytes()]

    # After the keep period they go too; a revoked key would have gone at once.
    later = NOW + DEFAULT_OVERLAP + DEFAULT_KEEP_PRIVATE
    assert gp.prune(now=later - SECOND) == []
    last = {k.info.kid for k in gp.prune(now=later)}
    assert last == (old_gp | old_hospital) - set(removed)
