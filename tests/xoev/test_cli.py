"""``kcbus validate`` / ``inspect`` / ``schemas list``: output format and exit codes.

A few run the real console script in a subprocess (what a user runs); the rest call
``kcbus.cli.main`` in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kcbus.cli import main
from xoev import SchemaRegistry

KCBUS = Path(sys.executable).parent / "kcbus"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KCBUS), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def xbau_dirs(standards: Path) -> list[str]:
    return ["--schemas", str(standards / "xbau-2.6/release"),
            "--schemas", str(standards / "xbau-2.6/complete")]


def mutate(tmp_path: Path, source: bytes, old: bytes, new: bytes, name: str) -> Path:
    assert old in source
    path = tmp_path / name
    path.write_bytes(source.replace(old, new))
    return path


def test_console_script_validates_the_xbau_message(xbau_dirs: list[str], data: Path) -> None:
    message = data / "xbau-baugenehmigung-antrag-0200.xml"
    done = run("validate", *xbau_dirs, str(message))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{message}: valid XBau-Hochbau 2.6 baugenehmigung.antrag.0200\n"


def test_console_script_rejects_hostile_input_without_traceback(
    xbau_dirs: list[str], tmp_path: Path
) -> None:
    bomb = tmp_path / "lolz.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE l [<!ENTITY a "aaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;">]>\n<l>&b;</l>')
    done = run("validate", *xbau_dirs, str(bomb))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{bomb}: invalid",
        "  line 2: /: document type declarations (DTD, entities) are not accepted",
    ]
    assert "Traceback" not in done.stderr


def test_console_script_usage_and_configuration_errors(tmp_path: Path) -> None:
    done = run("validate", "some.xml")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    done = run("validate", "--schemas", str(tmp_path / "nowhere"), "some.xml")
    assert done.returncode == 2
    assert done.stderr == f"kcbus: schema directory not found: {tmp_path / 'nowhere'}\n"


def test_mutations_print_line_path_and_reason(xbau_dirs: list[str], xbau_message: bytes,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(xbau_message)
    bad_version = mutate(tmp_path, xbau_message, b'version="2.6"', b'version="2.5"', "v.xml")
    bad_uuid = mutate(tmp_path, xbau_message, b"6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6",
                      b"keine-uuid", "u.xml")
    code = main(["validate", *xbau_dirs, str(good), str(bad_version), str(bad_uuid)])
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: valid XBau-Hochbau 2.6 baugenehmigung.antrag.0200"
    assert lines[1] == f"{bad_version}: invalid"
    assert lines[2].startswith("  line 6: /xbau:baugenehmigung.antrag.0200: Element ")
    assert "fixed value constraint '2.6'" in lines[2]
    assert lines[3] == f"{bad_uuid}: invalid"
    assert lines[4].startswith(
        "  line 9: /xbau:baugenehmigung.antrag.0200/nachrichtenkopf.g2g/identifikation.nachricht"
        "/nachrichtenUUID: ")
    assert "keine-uuid" not in lines[4]


def test_code_not_in_list_and_not_checked_lists(xbau_dirs: list[str], xbau_message: bytes,
                                                standards: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = mutate(tmp_path, xbau_message, b"<code>0100</code>", b"<code>0777</code>", "c.xml")
    lists = ["--codelists", str(standards / "xbau-2.6/codelists")]
    assert main(["validate", *xbau_dirs, *lists, str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: invalid",
        "  line 127: /xbau:baugenehmigung.antrag.0200/xbau:anlagen/anlage/anlageart: "
        "code not in code list (urn:xoev-de:xbau:codeliste:anlagen version 3.0)",
        "  not checked: urn:xoev-de:kosit:codeliste:verzeichnisdienst version 2",
    ]


def test_json_output(xbau_dirs: list[str], xbau_message: bytes, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(xbau_message)
    missing = tmp_path / "missing.xml"
    assert main(["validate", *xbau_dirs, "--json", str(good), str(missing)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report[0] == {
        "file": str(good), "valid": True, "standard": "XBau-Hochbau", "version": "2.6",
        "message_type": "baugenehmigung.antrag.0200", "errors": [], "not_checked": [],
    }
    assert report[1]["valid"] is False
    assert report[1]["errors"] == [
        {"line": None, "path": "/", "message": "cannot read file (FileNotFoundError)"}]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>', "DTD"),
        (b"<r><a>cut", "malformed XML"),
        ('<?xml version="1.0" encoding="UTF-8"?><r>Grüße</r>'.encode("latin-1"),
         "bad character encoding"),
        (b"<a>" * 300 + b"</a>" * 300, "nested deeper"),
        (b'<x:unbekannt xmlns:x="urn:example:x"/>', "no schema package"),
    ],
    ids=["xxe", "truncated", "encoding", "deep", "unknown"],
)
def test_bad_input_corpus_exits_1(xbau_dirs: list[str], tmp_path: Path, content: bytes,
                                  reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(content)
    assert main(["validate", *xbau_dirs, str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: invalid"
    assert out[1].startswith("  line ") and reason in out[1]
    assert "passwd" not in out[1] and "Grüße" not in out[1]


def test_xjustiz_and_cda_validate(standards: Path, data: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    xjustiz = data / "xjustiz-basisnachricht-0005006.xml"
    cda = data / "cda-entlassbrief.xml"
    code = main(["validate", "--schemas", str(standards / "xjustiz-3.6"),
                 "--schemas", str(standards / "cda-r2"), str(xjustiz), str(cda)])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{xjustiz}: valid XJustiz 3.6.2 nachricht.gds.basisnachricht.0005006",
        f"{cda}: valid CDA R2 18842-5",
    ]


def test_every_netex_example_via_cli(netex_registry: SchemaRegistry, standards: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # netex_registry compiled NeTEx once in this process; the CLI reuses that compile.
    examples = sorted(str(p) for p in (standards / "netex-2.0/examples").glob("*.xml"))
    assert main(["validate", "--schemas", str(standards / "netex-2.0/xsd"), *examples]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{e}: valid NeTEx 1.0 PublicationDelivery" for e in examples]


def test_inspect_entlassbrief(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(data / "cda-entlassbrief.xml")]) == 0
    facts = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert facts["message_id"] == "1.2.276.0.76.4.5.260912345.1^EB-2026-000417"
    assert facts["process_id (setId)"] == "1.2.276.0.76.4.5.260912345.2^EB-2026-000417"
    assert facts["revision"] == "1"
    assert facts["patient"] == "1.2.276.0.76.4.8^X000000001"
    assert facts["author"] == ("1.2.276.0.76.4.16:999999901 "
                               "(Kreisklinik Musterkreis, Innere Medizin)")
    assert facts["readers"] == "1.2.276.0.76.4.17:999999900 (Hausarztpraxis am Markt, Musterdorf)"
    assert "Mustermann" not in str(facts)
    assert main(["inspect", "--json", str(data / "xjustiz-basisnachricht-0005006.xml")]) == 0
    header = json.loads(capsys.readouterr().out)
    assert header["message_type"] == "nachricht.gds.basisnachricht.0005006"
    assert header["author"]["verzeichnisdienst"] == "safe"


def test_inspect_unknown_document(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_bytes(b'<Rechnung xmlns="urn:example:invoice"/>')
    done = run("inspect", str(path))
    assert done.returncode == 1
    assert done.stderr == ("kcbus: unknown document: root element 'Rechnung' in namespace "
                           "urn:example:invoice\n")


def test_schemas_list_shows_the_choice(xbau_dirs: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "list", *xbau_dirs]) == 0
    out = capsys.readouterr().out
    assert "1. xbau-2.6/release:" in out and "2. xbau-2.6/complete:" in out
    assert ("namespace http://www.xleitstelle.de/xbau/2/6: 25 files, shadowed by "
            "xbau-2.6/release") in out
    assert "compiled xbau-nachrichten-baugenehmigung.xsd in " in out
    assert "baugenehmigung.antrag.0200" in out
    assert "  http://xoev.de/schemata/code/1_0/xoev-code.xsd -> " in out
    assert main(["schemas", "list", "--json", "--no-compile", *xbau_dirs]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listing["packages"]] == ["xbau-2.6/release", "xbau-2.6/complete"]
    assert listing["packages"][0]["compiled"] == []
