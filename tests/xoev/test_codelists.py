"""Code lists: genericode loading and the XÖV code-list types 2-4 against XBau 2.6."""

from __future__ import annotations

from pathlib import Path

import pytest

from xoev import CodeList, CodeLists, ConfigurationError, SchemaRegistry, parse_xml

ANLAGEN = "urn:xoev-de:xbau:codeliste:anlagen"
VERZEICHNISDIENST = "urn:xoev-de:kosit:codeliste:verzeichnisdienst"


def line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


def test_genericode_lists_load(xbau_codelists: CodeLists) -> None:
    assert len(xbau_codelists) == 104
    messages = xbau_codelists.get("urn:xoev-de:xbau:codeliste:xbau-nachrichten", "4.0")
    assert messages is not None and "0200" in messages and "9999" not in messages
    ags = xbau_codelists.get("urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:ags",
                             "2026-06-30")
    assert ags is not None and len(ags.codes) > 10_000
    assert xbau_codelists.versions(ANLAGEN) == ("1.0", "2.0", "2.1", "3.0")


def test_valid_message_is_checked_and_unloaded_lists_are_reported(
    xbau_codelists: CodeLists, xbau_registry: SchemaRegistry, xbau_message: bytes
) -> None:
    report = xbau_codelists.check(parse_xml(xbau_message), registry=xbau_registry)
    assert report.ok, report.issues
    # nachrichtentyp (type 2), artDerMassnahme, bundesland + anlageart (type 3), mimeType (type 4)
    assert report.checked == 5
    assert report.not_checked == ((VERZEICHNISDIENST, "2"),)


def test_code_not_in_its_list(xbau_codelists: CodeLists, xbau_registry: SchemaRegistry,
                              xbau_message: bytes) -> None:
    mutated = xbau_message.replace(b'<anlageart listVersionID="3.0">\n        <code>0100</code>',
                                   b'<anlageart listVersionID="3.0">\n        <code>0777</code>')
    assert mutated != xbau_message
    tree = parse_xml(mutated)
    assert xbau_registry.validate(tree).valid  # the schema alone cannot see it (type 3)
    report = xbau_codelists.check(tree, registry=xbau_registry)
    [issue] = report.issues
    assert issue.line == line_of(mutated, b"<anlageart")
    assert issue.path == "/xbau:baugenehmigung.antrag.0200/xbau:anlagen/anlage/anlageart"
    assert (issue.list_uri, issue.list_version) == (ANLAGEN, "3.0")
    assert "0777" not in issue.message


def test_type_2_values_come_from_the_schema(xbau_codelists: CodeLists,
                                            xbau_registry: SchemaRegistry,
                                            xbau_message: bytes) -> None:
    # nachrichtentyp: listURI and listVersionID are fixed in XBau's schema; the message may
    # omit them and is still checked against xbau-nachrichten 4.0.
    bare = xbau_message.replace(
        b'<nachrichtentyp listURI="urn:xoev-de:xbau:codeliste:xbau-nachrichten" '
        b'listVersionID="4.0">', b"<nachrichtentyp>")
    assert bare != xbau_message
    report = xbau_codelists.check(parse_xml(bare), registry=xbau_registry)
    assert report.ok and report.checked == 5
    # Without the schema, the same message is not silently passed: the list is unknown.
    blind = xbau_codelists.check(parse_xml(bare))
    assert any(issue.problem == "listURI missing" for issue in blind.issues)


def test_type_3_version_sent_in_the_message(xbau_codelists: CodeLists,
                                            xbau_registry: SchemaRegistry,
                                            xbau_message: bytes) -> None:
    other = xbau_message.replace(b'<anlageart listVersionID="3.0">',
                                 b'<anlageart listVersionID="2.1">')
    report = xbau_codelists.check(parse_xml(other), registry=xbau_registry)
    assert report.ok and report.checked == 5  # 0100 exists in version 2.1 too
    unknown = xbau_message.replace(b'<anlageart listVersionID="3.0">',
                                   b'<anlageart listVersionID="7.0">')
    report = xbau_codelists.check(parse_xml(unknown), registry=xbau_registry)
    assert (ANLAGEN, "7.0") in report.not_checked and report.ok


def test_type_4_list_sent_in_the_message(xbau_codelists: CodeLists,
                                         xbau_registry: SchemaRegistry,
                                         xbau_message: bytes) -> None:
    wrong = xbau_message.replace(b"<code>image/png</code>",
                                 b"<code>application/x-msdownload</code>")
    [issue] = xbau_codelists.check(parse_xml(wrong), registry=xbau_registry).issues
    assert issue.list_uri == "urn:xoev-de:xbau:codeliste:textofficemimetypes"
    assert issue.path.endswith("/anlage/mimeType")


def test_code_lists_from_scratch(tmp_path: Path) -> None:
    lists = CodeLists([CodeList("urn:example:farben", "1", "farben", frozenset({"rot", "blau"}))])
    tree = parse_xml(b'<r><f listURI="urn:example:farben" listVersionID="1"><code>gruen</code>'
                     b'</f><g listURI="urn:example:formen" listVersionID="1"><code>x</code></g>'
                     b'<h listURI="urn:example:farben"><code>rot</code></h></r>')
    report = lists.check(tree)
    problems = {issue.path: issue.problem for issue in report.issues}
    assert problems == {"/r/f": "code not in code list", "/r/h": "listVersionID missing"}
    assert report.not_checked == (("urn:example:formen", "1"),)
    with pytest.raises(ConfigurationError):
        CodeLists.from_dir(tmp_path)
    (tmp_path / "broken.xml").write_text("<nicht-genericode/>")
    with pytest.raises(ConfigurationError):
        CodeLists.from_dir(tmp_path)


def test_learned_paths_give_the_type_walks_reports(xbau_codelists: CodeLists,
                                                  xbau_registry: SchemaRegistry,
                                                  xbau_message: bytes) -> None:
    """Code elements on paths the registry has seen are checked from what it learned there;
    the reports are the type walk's, whichever documents came first."""
    from xoev import _schemas

    bare = xbau_message.replace(
        b'<nachrichtentyp listURI="urn:xoev-de:xbau:codeliste:xbau-nachrichten" '
        b'listVersionID="4.0">', b"<nachrichtentyp>")
    wrong = xbau_message.replace(b"<code>image/png</code>", b"<code>text/x-nope</code>")
    xsi = b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xbau:Code.Anlagen"'
    typed = xbau_message.replace(b'<anlageart listVersionID="3.0">',
                                 b'<anlageart listVersionID="3.0"' + xsi + b">")
    documents = [xbau_message, bare, wrong, typed, xbau_message, bare, wrong]

    def report(data: bytes) -> tuple[object, ...]:
        found = xbau_codelists.check(parse_xml(data), registry=xbau_registry)
        return found.issues, found.not_checked, found.checked

    walked = []
    for data in documents:  # the type walk alone: forget every path before each document
        _schemas._CODE_PATHS.clear()
        walked.append(report(data))
    _schemas._CODE_PATHS.clear()
    assert [report(data) for data in documents] == walked
    # The message sent nachrichtentyp's list itself first: the schema's value was learned
    # only when a document omitted it, and is used from then on.
    assert walked[1] == walked[5] and walked[1][2] == 5


def test_what_the_registry_learns_is_bounded(xbau_codelists: CodeLists,
                                             xbau_registry: SchemaRegistry,
                                             xbau_message: bytes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Senders can invent paths (wildcards): past the bound, new paths take the type walk and
    the reports stay the same."""
    from xoev import _schemas

    _schemas._CODE_PATHS.clear()
    walked = xbau_codelists.check(parse_xml(xbau_message), registry=xbau_registry)
    _schemas._CODE_PATHS.clear()
    monkeypatch.setattr(_schemas, "_MAX_LEARNED_PATHS", 2)
    for _ in range(2):
        found = xbau_codelists.check(parse_xml(xbau_message), registry=xbau_registry)
        assert (found.issues, found.not_checked, found.checked) == (
            walked.issues, walked.not_checked, walked.checked)
    assert all(len(paths.slots) <= 2 for paths in _schemas._CODE_PATHS.values())
    _schemas._CODE_PATHS.clear()
