"""The partner CLI through the installed console script: keys, seal, open, end-to-end."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.envelope import Keystore, KeystoreError

PASSPHRASE = "s3cret"

KCBUS = str(Path(sys.executable).parent / "kcbus")

ENTLASSBRIEF = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.276.0.76.4.17.9814184919" extension="eb-2026-4711"/>
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1"/>
  <effectiveTime value="20261122113000+0100"/>
  <setId root="1.2.276.0.76.4.17.9814184919" extension="eb-set-4711"/>
  <versionNumber value="1"/>
  <recordTarget><patientRole><id root="1.2.276.0.76.4.8" extension="X123456789"/>
    <patient><name><given>Erika</given><family>Mustermann</family></name></patient>
  </patientRole></recordTarget>
  <author><time value="20261122113000+0100"/><assignedAuthor>
    <id root="1.2.276.0.76.4.17" extension="krankenhaus-1"/>
  </assignedAuthor></author>
  <informationRecipient><intendedRecipient>
    <id root="1.2.276.0.76.4.17" extension="praxis-7"/>
  </intendedRecipient></informationRecipient>
</ClinicalDocument>
"""


def kcbus(
    *args: str | Path,
    keystore: Path | None = None,
    passphrase: str = PASSPHRASE,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KCBUS_KEYSTORE_PASSPHRASE": passphrase}
    env.pop("KCBUS_KEYSTORE", None)
    if keystore is not None:
        env["KCBUS_KEYSTORE"] = str(keystore)
    return subprocess.run(
        [KCBUS, *map(str, args)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def partners(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keystores of hospital, gp and the bus, each knowing the others' public keys. Made
    through the Python API (each CLI call pays ~1 s of interpreter start); the key commands
    themselves are exercised in test_key_commands_round_trip."""
    root = tmp_path_factory.mktemp("cli")
    names = ("hospital", "gp", "bus")
    stores = {name: Keystore(root / name, PASSPHRASE) for name in names}
    for name in names:
        stores[name].create_identity(name, "modern", now=datetime.now(UTC))
    for name in names:
        for other in names:
            if other != name:
                stores[name].import_public(
                    other, stores[other].export_public(other), now=datetime.now(UTC)
                )
    return root


def test_seal_and_open_with_attachments(partners: Path, tmp_path: Path) -> None:
    message = tmp_path / "entlassbrief.xml"
    message.write_bytes(ENTLASSBRIEF)
    scan = tmp_path / "befund.pdf"
    scan.write_bytes(os.urandom(2_500_000))
    envelope = tmp_path / "envelope.kcb"
    out = ok(
        kcbus(
            "seal",
            "--keystore",
            partners / "hospital",
            "--from",
            "hospital",
            "--to",
            "gp",
            message,
            "--attach",
            scan,
            "-o",
            envelope,
        )
    )
    assert "container" in out and "1 attachments" in out
    assert b"Mustermann" not in envelope.read_bytes()

    report = ok(kcbus("open", "--keystore", partners / "gp", envelope, "-o", tmp_path / "in"))
    assert (tmp_path / "in" / "message.xml").read_bytes() == ENTLASSBRIEF
    assert (tmp_path / "in" / "befund.pdf").read_bytes() == scan.read_bytes()
    assert "sender          hospital" in report
    import hashlib

    assert hashlib.sha256(scan.read_bytes()).hexdigest() in report
    assert "Mustermann" not in report

    data = json.loads(
        ok(
            kcbus(
                "open", "--keystore", partners / "gp", envelope, "-o", tmp_path / "again", "--json"
            )
        )
    )
    assert data["sender"] == "hospital" and data["attachments"][0]["name"] == "befund.pdf"


def test_an_attachment_named_like_the_message_does_not_clobber_it(
    partners: Path, tmp_path: Path
) -> None:
    message = tmp_path / "entlassbrief.xml"
    message.write_bytes(ENTLASSBRIEF)
    decoy = tmp_path / "message.xml"  # the sender chooses attachment names
    decoy.write_bytes(b"<anlage/>")
    envelope = tmp_path / "envelope.kcb"
    ok(
        kcbus(
            "seal",
            "--keystore",
            partners / "hospital",
            "--from",
            "hospital",
            "--to",
            "gp",
            message,
            "--attach",
            decoy,
            "-o",
            envelope,
        )
    )
    data = json.loads(
        ok(kcbus("open", "--keystore", partners / "gp", envelope, "-o", tmp_path / "in", "--json"))
    )
    assert Path(data["message"]["path"]).read_bytes() == ENTLASSBRIEF
    assert (tmp_path / "in" / "message.xml").read_bytes() == b"<anlage/>"


def _sealed_for_gp(partners: Path, tmp_path: Path) -> Path:
    """hospital's Entlassbrief sealed for gp by the CLI, as ``tmp_path/m.jwe``."""
    message = tmp_path / "m.xml"
    message.write_bytes(ENTLASSBRIEF)
    envelope = tmp_path / "m.jwe"
    ok(
        kcbus(
            "seal",
            "--from",
            "hospital",
            "--to",
            "gp",
            message,
            "-o",
            envelope,
            keystore=partners / "hospital",
        )
    )
    return envelope


def test_rejections_are_one_line_with_exit_1(partners: Path, tmp_path: Path) -> None:
    envelope = _sealed_for_gp(partners, tmp_path)
    not_ours = kcbus("open", envelope, "-o", tmp_path / "x", keystore=partners / "bus")
    assert not_ours.returncode == 1
    assert not_ours.stderr.count("\n") == 1 and "not for us" in not_ours.stderr
    assert not (tmp_path / "x" / "message.xml").exists()

    data = bytearray(envelope.read_bytes())
    data[len(data) // 2] ^= 0x01
    envelope.write_bytes(bytes(data))
    tampered = kcbus("open", envelope, "-o", tmp_path / "y", keystore=partners / "gp")
    assert tampered.returncode == 1 and "Traceback" not in tampered.stderr


def test_usage_and_keystore_errors_exit_2(partners: Path, tmp_path: Path) -> None:
    message = tmp_path / "m.xml"
    message.write_bytes(ENTLASSBRIEF)
    no_keystore = kcbus("seal", "--from", "hospital", "--to", "gp", message, "-o", "x")
    assert no_keystore.returncode == 2 and "KCBUS_KEYSTORE" in no_keystore.stderr
    wrong = kcbus(
        "seal",
        "--from",
        "hospital",
        "--to",
        "gp",
        message,
        "-o",
        tmp_path / "x",
        keystore=partners / "hospital",
        passphrase="wrong",
    )
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    unknown = kcbus(
        "seal",
        "--from",
        "hospital",
        "--to",
        "nobody",
        message,
        "-o",
        tmp_path / "x",
        keystore=partners / "hospital",
    )
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
    missing = kcbus(
        "seal",
        "--from",
        "hospital",
        "--to",
        "gp",
        tmp_path / "none.xml",
        "-o",
        tmp_path / "x",
        keystore=partners / "hospital",
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert kcbus("keys", "new", "--partner", "x", "--profile", "rot13").returncode == 2


def test_end_to_end_via_the_bus(partners: Path, tmp_path: Path) -> None:
    message = tmp_path / "entlassbrief.xml"
    message.write_bytes(ENTLASSBRIEF)
    envelope = tmp_path / "e2e.kcb"
    ok(
        kcbus(
            "seal",
            "--from",
            "hospital",
            "--to",
            "gp",
            "--via",
            "bus",
            message,
            "-o",
            envelope,
            keystore=partners / "hospital",
        )
    )
    label = json.loads(ok(kcbus("open", "--label", "--json", envelope, keystore=partners / "bus")))
    assert label["message_type"] == "18842-5"
    assert label["readers"] == ["1.2.276.0.76.4.17:praxis-7"]
    assert (label["sender"], label["recipient"]) == ("hospital", "gp")
    assert "Mustermann" not in json.dumps(label)
    # the bus cannot open the content itself
    assert (
        kcbus("open", envelope, "-o", tmp_path / "bus", keystore=partners / "bus").returncode == 1
    )
    ok(kcbus("open", envelope, "-o", tmp_path / "gp", keystore=partners / "gp"))
    assert (tmp_path / "gp" / "message.xml").read_bytes() == ENTLASSBRIEF


def test_key_commands_round_trip(tmp_path: Path) -> None:
    """keys new / export / import / list / rotate / revoke, as a partner would run them."""
    ok(
        kcbus(
            "keys", "new", "--partner", "amt", "--profile", "modern", "--keystore", tmp_path / "amt"
        )
    )
    ok(
        kcbus(
            "keys",
            "export",
            "--partner",
            "amt",
            "--keystore",
            tmp_path / "amt",
            "-o",
            tmp_path / "amt.jwks",
        )
    )
    exported = json.loads((tmp_path / "amt.jwks").read_text())
    assert all("d" not in k for k in exported["keys"])
    imported = ok(
        kcbus(
            "keys", "import", "--partner", "amt", tmp_path / "amt.jwks", keystore=tmp_path / "peer"
        )
    )
    assert imported.count("public") == 2

    store = tmp_path / "amt"
    before = json.loads(ok(kcbus("keys", "list", "--partner", "amt", "--json", keystore=store)))
    assert {k["status"] for k in before} == {"active"} and len(before) == 2
    rotated = ok(kcbus("keys", "rotate", "--overlap-days", "1", keystore=store))
    assert rotated.count("amt") == 4
    # the export from before the rotation, imported again: the old keys stay cut short
    ok(kcbus("keys", "export", "--partner", "amt", "-o", tmp_path / "new.jwks", keystore=store))
    ok(kcbus("keys", "import", "--partner", "amt", tmp_path / "new.jwks",
             keystore=tmp_path / "peer"))
    again = kcbus("keys", "import", "--partner", "amt", tmp_path / "amt.jwks",
                  keystore=tmp_path / "peer")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("keeps its shorter stored validity") == 2
    kid = rotated.split()[3]
    listing = ok(
        kcbus(
            "keys", "revoke", "--partner", "amt", "--kid", kid, "--reason", "test", keystore=store
        )
    )
    assert f"{kid}  revoked" in listing


def test_passphrase_prune_and_a_missing_keystore(tmp_path: Path) -> None:
    store = tmp_path / "amt"
    ok(kcbus("keys", "new", "--partner", "amt", "--profile", "modern", keystore=store))
    missing = kcbus("keys", "list", keystore=tmp_path / "typo")
    assert missing.returncode == 2 and "no keystore at" in missing.stderr
    assert not (tmp_path / "typo").exists()

    env = {
        **os.environ,
        "KCBUS_KEYSTORE_PASSPHRASE": PASSPHRASE,
        "KCBUS_KEYSTORE": str(store),
        "KCBUS_KEYSTORE_NEW_PASSPHRASE": "n3w s3cret",
    }
    changed = subprocess.run(
        [KCBUS, "keys", "passphrase"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert changed.returncode == 0, changed.stderr
    assert "re-encrypted 2 private keys" in changed.stdout
    assert kcbus("keys", "rotate", keystore=store).returncode == 2  # old passphrase: refused
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ok(
        kcbus(
            "keys",
            "rotate",
            "--overlap-days",
            "0",
            "--not-before",
            an_hour_ago,
            keystore=store,
            passphrase="n3w s3cret",
        )
    )
    without_new = kcbus("keys", "passphrase", keystore=store, passphrase="n3w s3cret")
    assert without_new.returncode == 2 and "KCBUS_KEYSTORE_NEW_PASSPHRASE" in without_new.stderr

    # the old keys expired an hour ago, but an envelope sealed just before may still come
    # (default: 7 days); with no envelope age allowed, only the clock skew (5 min) is left —
    # for the signing key: the decryption key stays for envelopes stored in the ledger
    assert "nothing to prune" in ok(kcbus("keys", "prune", keystore=store))
    planned = json.loads(
        ok(kcbus("keys", "prune", "--dry-run", "--max-age-hours", "0", "--json", keystore=store))
    )
    assert planned["dry_run"] and [k["use"] for k in planned["removed"]] == ["sig"]
    assert all(k["private_removed"] and k["public_removed"] for k in planned["removed"])
    assert len(json.loads(ok(kcbus("keys", "list", "--json", keystore=store)))) == 4
    pruned = ok(
        kcbus(
            "keys",
            "prune",
            "--max-age-hours",
            "0",
            "--keep-private-days",
            "0",
            keystore=store,
            passphrase="n3w s3cret",
        )
    )
    assert pruned.count("removed private+public key") == 2
    assert len(json.loads(ok(kcbus("keys", "list", "--json", keystore=store)))) == 2
    log = [
        json.loads(line)["event"]
        for line in (store / "keystore.log").read_text().split("\n")
        if line
    ]
    assert log == ["identity-created", "passphrase-changed", "rotated", "pruned"]


def test_a_rejected_envelope_leaves_no_output_folder(partners: Path, tmp_path: Path) -> None:
    envelope = _sealed_for_gp(partners, tmp_path)
    refused = kcbus("open", envelope, "-o", tmp_path / "out", keystore=partners / "bus")
    assert refused.returncode == 1 and not (tmp_path / "out").exists()


def test_the_new_passphrase_prompt_asks_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from kcbus.cli import key_commands

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("KCBUS_KEYSTORE_NEW_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", Terminal())
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    with pytest.raises(KeystoreError, match="differ"):
        key_commands._new_passphrase()
    assert key_commands._new_passphrase() == "same"


BUS_CONFIG = """\
bus:
  id: amt
  name: Amt
  address: {verzeichnisdienst: DVDV, kennung: "amt"}
  keystore: keys
  inbound: memory://amt-inbox
partners:
  gemeinde-a:
    name: Gemeinde A
    address: {verzeichnisdienst: DVDV, kennung: "gemeinde-a"}
    deliver_to: memory://gemeinde-a
    may_send: [baugenehmigung.*]
routes:
  bauantrag:
    match: {message_types: [baugenehmigung.*], standards: [XBau]}
    to: [leser]
    schemas: [schemas]
    retention: 30d
  anzeige:
    match: {message_types: [baugenehmigung.anzeige.*], standards: [XBau]}
    to: [leser]
    schemas: [schemas]
    retention: RETENTION
"""


def test_prune_keeps_decryption_keys_for_the_ledger(tmp_path: Path) -> None:
    """Our old decryption key re-opens envelopes stored in the ledger (a resend re-seals their
    attachments): it outlives the short grace by --keep-private-days, or by the longest route
    retention of the bus configuration plus a month (forever if a route keeps forever)."""
    store = tmp_path / "amt"
    ok(kcbus("keys", "new", "--partner", "amt", "--profile", "modern", keystore=store))
    # the old keys expired 100 days ago
    long_ago = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    ok(kcbus("keys", "rotate", "--overlap-days", "0", "--not-before", long_ago, keystore=store))
    (tmp_path / "schemas").mkdir()

    def planned(*options: str | Path) -> list[str]:
        out = ok(kcbus("keys", "prune", "--dry-run", "--json", *options, keystore=store))
        return sorted(k["use"] for k in json.loads(out)["removed"])

    assert planned() == ["sig"]  # default: kept 400 days
    assert planned("--keep-private-days", "99") == ["enc", "sig"]
    config = tmp_path / "kcbus.yaml"
    config.write_text(BUS_CONFIG.replace("RETENTION", "60d"))
    assert planned("--config", config) == ["enc", "sig"]  # 60 + 35 days < 100
    config.write_text(BUS_CONFIG.replace("RETENTION", "90d"))
    assert planned("--config", config) == ["sig"]
    config.write_text(BUS_CONFIG.replace("RETENTION", "null"))
    assert planned("--config", config) == ["sig"]
    both = kcbus("keys", "prune", "--config", config, "--keep-private-days", "1", keystore=store)
    assert both.returncode == 2 and "not allowed with" in both.stderr
