"""Schema registry against the official packages: offline, deterministic, line + XPath."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from xoev import (
    ConfigurationError,
    NoSchema,
    PartnerFault,
    SchemaCompileError,
    SchemaRegistry,
    parse_xml,
)

XBAU_NS = "http://www.xleitstelle.de/xbau/2/6"
KERNMODUL_NS = "http://www.xleitstelle.de/xbau/kernmodul/1/3/0"
ROOT = "/xbau:baugenehmigung.antrag.0200"


def line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


def compile_all(registry: SchemaRegistry) -> int:
    compiled = 0
    for package in registry.packages():
        owned = {ns.namespace for ns in package.namespaces if ns.shadowed_by is None}
        entries = {registry.entry_for_element(ns, local)
                   for ns, local in registry.message_types(package.name) if ns in owned}
        for entry in entries:
            report = registry.compile(entry)
            assert report.unresolved == (), entry
            compiled += 1
    return compiled


@pytest.mark.usefixtures("no_network")
def test_xbau_complete_and_release_compile_offline(standards: Path) -> None:
    complete = SchemaRegistry.from_dirs([standards / "xbau-2.6/complete"])
    assert compile_all(complete) >= 22
    release = SchemaRegistry.from_dirs([standards / "xbau-2.6/release",
                                        standards / "xbau-2.6/complete"])
    assert compile_all(release) >= 22
    # Every absolute URL of the release set maps to a local file of complete/.
    urls = release.url_map()
    assert "http://xoev.de/schemata/code/1_0/xoev-code.xsd" in urls
    assert all(path.parent == standards / "xbau-2.6/complete" for path in urls.values())


def test_namespace_choice_is_deterministic_and_follows_order(standards: Path) -> None:
    release, complete = standards / "xbau-2.6/release", standards / "xbau-2.6/complete"
    root = etree.Element(f"{{{XBAU_NS}}}baugenehmigung.antrag.0200")
    first = SchemaRegistry.from_dirs([release, complete])
    again = SchemaRegistry.from_dirs([release, complete])
    assert first.entry_for(root) == again.entry_for(root) == release / (
        "xbau-nachrichten-baugenehmigung.xsd")
    assert first.owner(XBAU_NS) == "xbau-2.6/release"
    shadowed = {ns.namespace: ns.shadowed_by for p in first.packages() for ns in p.namespaces
                if p.name == "xbau-2.6/complete"}
    assert shadowed[XBAU_NS] == "xbau-2.6/release"
    assert shadowed[KERNMODUL_NS] is None
    swapped = SchemaRegistry.from_dirs([complete, release])
    assert swapped.entry_for(root) == complete / "xbau-nachrichten-baugenehmigung.xsd"


def test_xbau_message_validates(xbau_registry: SchemaRegistry, xbau_message: bytes) -> None:
    result = xbau_registry.validate(parse_xml(xbau_message))
    assert result.valid, result.errors
    assert result.package == "xbau-2.6/release"
    assert result.element == "baugenehmigung.antrag.0200"
    report = xbau_registry.compile(result.schema)  # type: ignore[arg-type]
    # baukasten imports kernmodul from two files; libxml2 alone would read only the first.
    assert KERNMODUL_NS in report.merged
    # Compiled once per process: timed if the first registry to compile it had a clock.
    assert report.seconds >= 0


def test_wrong_fixed_version_fails_on_the_root(xbau_registry: SchemaRegistry,
                                               xbau_message: bytes) -> None:
    mutated = xbau_message.replace(b'version="2.6"', b'version="2.5"')
    result = xbau_registry.validate(parse_xml(mutated))
    assert not result.valid
    [issue] = result.errors
    assert issue.line == line_of(mutated, b'version="2.5"')
    assert issue.path == ROOT
    assert "attribute 'version'" in issue.message
    assert "fixed value constraint '2.6'" in issue.message
    assert "2.5" not in issue.message


def test_malformed_uuid_fails_with_line_and_path(xbau_registry: SchemaRegistry,
                                                 xbau_message: bytes) -> None:
    mutated = xbau_message.replace(b"6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6", b"Erika Beispiel 1958")
    result = xbau_registry.validate(parse_xml(mutated))
    assert not result.valid
    [issue] = result.errors
    assert issue.line == line_of(mutated, b"<nachrichtenUUID>")
    assert issue.path == f"{ROOT}/nachrichtenkopf.g2g/identifikation.nachricht/nachrichtenUUID"
    assert "pattern" in issue.message
    assert "Erika" not in issue.message and "1958" not in issue.message  # values redacted


def test_missing_mandatory_element(xbau_registry: SchemaRegistry, xbau_message: bytes) -> None:
    start = xbau_message.index(b"    <xbau:bezeichnungDesBauvorhabens>")
    end = xbau_message.index(b"\n", start) + 1
    mutated = xbau_message[:start] + xbau_message[end:]
    result = xbau_registry.validate(parse_xml(mutated))
    assert not result.valid
    issue = result.errors[0]
    assert issue.line == line_of(mutated, b"<xbau:beteiligte>")
    assert issue.path == f"{ROOT}/xbau:bauvorhaben/xbau:beteiligte"
    assert "bezeichnungDesBauvorhabens" in issue.message


def test_xjustiz_message_validates(standards: Path, data: Path) -> None:
    registry = SchemaRegistry.from_dirs([standards / "xjustiz-3.6"])
    message = (data / "xjustiz-basisnachricht-0005006.xml").read_bytes()
    result = registry.validate(parse_xml(message))
    assert result.valid, result.errors
    broken = registry.validate(parse_xml(message.replace(b'xjustizVersion="3.6.2"',
                                                         b'xjustizVersion="3.5"')))
    assert not broken.valid
    assert broken.errors[0].path == "/tns:nachricht.gds.basisnachricht.0005006/tns:nachrichtenkopf"


def test_cda_documents_validate(standards: Path, data: Path) -> None:
    registry = SchemaRegistry.from_dirs([standards / "cda-r2"])
    for path in (data / "cda-entlassbrief.xml",
                 standards / "cda-r2/infrastructure/cda/SampleCDADocument.xml"):
        result = registry.validate(parse_xml(path.read_bytes()))
        assert result.valid, (path, result.errors)
        assert result.schema == standards / "cda-r2/infrastructure/cda/CDA.xsd"


def test_every_netex_example_validates(netex_registry: SchemaRegistry, standards: Path) -> None:
    examples = sorted((standards / "netex-2.0/examples").glob("*.xml"))
    assert len(examples) == 6
    for path in examples:
        result = netex_registry.validate(parse_xml(path.read_bytes()))
        assert result.valid, (path.name, result.errors[:3])
        # The strictest variant wins over NeTEx_publication-NoConstraint.xsd.
        assert result.schema == standards / "netex-2.0/xsd/NeTEx_publication.xsd"
    report = netex_registry.compile(standards / "netex-2.0/xsd/NeTEx_publication.xsd")
    assert report.engine == "libxml2" and report.seconds >= 0


def test_netex_invalid_document_is_caught(netex_registry: SchemaRegistry,
                                          standards: Path) -> None:
    data = (standards / "netex-2.0/examples/Netex_de_calendarExample_01_gd.xml").read_bytes()
    mutated = data.replace(b"<PublicationTimestamp>2010-12-17T09:30:47.0Z",
                           b"<PublicationTimestamp>gestern", 1)
    result = netex_registry.validate(parse_xml(mutated))
    assert not result.valid
    assert result.errors[0].path == "/PublicationDelivery/PublicationTimestamp"
    assert result.errors[0].line == line_of(mutated, b"<PublicationTimestamp>gestern")


def test_xdomea_examples_and_negatives(standards: Path) -> None:
    registry = SchemaRegistry.from_dirs([standards / "xdomea-3/xsd"])
    for path in sorted((standards / "xdomea-3/examples").glob("3.*/*.xml")):
        result = registry.validate(parse_xml(path.read_bytes()))
        assert result.valid, (path.name, result.errors[:2])
    for path in sorted((standards / "xdomea-3/examples/negative").glob("*.xml")):
        result = registry.validate(parse_xml(path.read_bytes()))
        assert not result.valid, path.name
        assert all(issue.line for issue in result.errors)


def test_document_without_schema(xbau_registry: SchemaRegistry) -> None:
    with pytest.raises(NoSchema) as caught:
        xbau_registry.validate(parse_xml(b'<x:r xmlns:x="urn:example:none"/>'))
    assert isinstance(caught.value, PartnerFault)
    assert not caught.value.namespace_known
    with pytest.raises(NoSchema) as caught:
        xbau_registry.validate(parse_xml(f'<x:gibtEsNicht xmlns:x="{XBAU_NS}"/>'.encode()))
    assert caught.value.namespace_known


# -- self-made packages: the edge cases the official ones do not show -------------------------

XS = 'xmlns:xs="http://www.w3.org/2001/XMLSchema"'


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_same_namespace_imported_from_two_files_is_merged(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    write(package, "b-strings.xsd", f"""<xs:schema {XS} targetNamespace="urn:b">
        <xs:simpleType name="Short"><xs:restriction base="xs:string">
        <xs:maxLength value="3"/></xs:restriction></xs:simpleType></xs:schema>""")
    write(package, "b-numbers.xsd", f"""<xs:schema {XS} targetNamespace="urn:b">
        <xs:simpleType name="Count"><xs:restriction base="xs:int">
        <xs:minInclusive value="0"/></xs:restriction></xs:simpleType></xs:schema>""")
    entry = write(package, "a.xsd", f"""<xs:schema {XS} xmlns:b="urn:b" targetNamespace="urn:a">
        <xs:import namespace="urn:b" schemaLocation="b-strings.xsd"/>
        <xs:import namespace="urn:b" schemaLocation="b-numbers.xsd"/>
        <xs:element name="r"><xs:complexType><xs:sequence>
          <xs:element name="s" type="b:Short" form="unqualified"/>
          <xs:element name="n" type="b:Count" form="unqualified"/>
        </xs:sequence></xs:complexType></xs:element></xs:schema>""")
    # libxml2 on its own drops the second import and cannot resolve b:Count.
    with pytest.raises(etree.XMLSchemaParseError):
        etree.XMLSchema(etree.parse(str(entry)))
    registry = SchemaRegistry.from_dirs([package])
    assert registry.validate(parse_xml(b'<a:r xmlns:a="urn:a"><s>abc</s><n>4</n></a:r>')).valid
    result = registry.validate(parse_xml(b'<a:r xmlns:a="urn:a"><s>abc</s><n>-4</n></a:r>'))
    assert not result.valid and result.errors[0].path == "/a:r/n"
    assert registry.compile(entry).merged == ("urn:b",)


def test_compile_time_comes_from_the_callers_clock(tmp_path: Path) -> None:
    """xoev reads no clock (sans-IO): compile time is measured with the clock passed in."""
    ticks = iter([10.0, 12.5])
    timed = tmp_path / "timed"
    entry = write(timed, "t.xsd", f"""<xs:schema {XS} targetNamespace="urn:t">
        <xs:element name="t" type="xs:string"/></xs:schema>""")
    assert SchemaRegistry.from_dirs([timed], clock=lambda: next(ticks)).compile(
        entry).seconds == 2.5
    untimed = tmp_path / "untimed"
    entry = write(untimed, "u.xsd", f"""<xs:schema {XS} targetNamespace="urn:u">
        <xs:element name="u" type="xs:string"/></xs:schema>""")
    assert SchemaRegistry.from_dirs([untimed]).compile(entry).seconds == 0.0


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                hits.append(conn.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", hits
    stop.set()
    thread.join()
    server.close()


def test_unmapped_remote_import_is_never_fetched(tmp_path: Path,
                                                 listener: tuple[str, list[bytes]]) -> None:
    url, hits = listener
    package = tmp_path / "remote"
    entry = write(package, "a.xsd", f"""<xs:schema {XS} targetNamespace="urn:a">
        <xs:import namespace="urn:gone" schemaLocation="{url}/gone.xsd"/>
        <xs:element name="r" type="xs:string"/></xs:schema>""")
    registry = SchemaRegistry.from_dirs([package])
    assert registry.validate(parse_xml(b'<a:r xmlns:a="urn:a">x</a:r>')).valid
    assert registry.compile(entry).unresolved == (f"{url}/gone.xsd",)
    needs_it = write(tmp_path / "remote2", "a.xsd", f"""<xs:schema {XS} xmlns:g="urn:gone"
        targetNamespace="urn:a2"><xs:import namespace="urn:gone" schemaLocation="{url}/g.xsd"/>
        <xs:element name="r" type="g:T"/></xs:schema>""")
    with pytest.raises(SchemaCompileError) as caught:
        SchemaRegistry.from_dirs([needs_it.parent]).compile(needs_it)
    assert isinstance(caught.value, ConfigurationError)
    assert f"{url}/g.xsd" in caught.value.unresolved
    with pytest.raises(SchemaCompileError):
        SchemaRegistry.from_dirs([needs_it.parent]).diagnose(
            parse_xml(b'<a:r xmlns:a="urn:a2">x</a:r>'))
    assert hits == []


def test_xsd_11_schema_is_validated_by_xmlschema(tmp_path: Path) -> None:
    package = tmp_path / "xsd11"
    write(package, "range.xsd", f"""<xs:schema {XS}
        xmlns:vc="http://www.w3.org/2007/XMLSchema-versioning" vc:minVersion="1.1"
        targetNamespace="urn:range">
        <xs:element name="range"><xs:complexType>
          <xs:attribute name="min" type="xs:int"/><xs:attribute name="max" type="xs:int"/>
          <xs:assert test="@min le @max"/>
        </xs:complexType></xs:element></xs:schema>""")
    registry = SchemaRegistry.from_dirs([package])
    good = registry.validate(parse_xml(b'<r:range xmlns:r="urn:range" min="1" max="2"/>'))
    assert good.valid and good.engine == "xmlschema-1.1"
    bad = registry.validate(parse_xml(b'<r:range xmlns:r="urn:range" min="3" max="2"/>'))
    assert not bad.valid and bad.errors[0].line == 1


def test_xmlschema_diagnostics_on_demand(xbau_registry: SchemaRegistry,
                                         xbau_message: bytes) -> None:
    mutated = xbau_message.replace(b"6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6", b"kein-uuid")
    diagnosis = xbau_registry.diagnose(parse_xml(mutated))
    assert diagnosis.engine == "xmlschema" and not diagnosis.valid
    assert diagnosis.errors[0].line == line_of(mutated, b"<nachrichtenUUID>")
    assert "nachrichtenUUID" in diagnosis.errors[0].path


def test_broken_package_is_a_configuration_error(tmp_path: Path) -> None:
    entry = write(tmp_path / "broken", "a.xsd", f"""<xs:schema {XS} targetNamespace="urn:x">
        <xs:element name="r" type="undefinedType"/></xs:schema>""")
    registry = SchemaRegistry.from_dirs([entry.parent])
    with pytest.raises(SchemaCompileError):
        registry.validate(parse_xml(b'<x:r xmlns:x="urn:x"/>'))
    with pytest.raises(ConfigurationError):
        SchemaRegistry.from_dirs([tmp_path / "missing"])


def test_entry_choice_manifest_then_hint_then_strictness(tmp_path: Path) -> None:
    strict = f"""<xs:schema {XS} targetNamespace="urn:p" xmlns:p="urn:p">
        <xs:element name="r"><xs:complexType><xs:sequence>
          <xs:element name="i" type="xs:int" maxOccurs="9" form="unqualified"/>
        </xs:sequence></xs:complexType>
        <xs:unique name="once"><xs:selector xpath="i"/><xs:field xpath="."/></xs:unique>
        </xs:element></xs:schema>"""
    lax = strict.replace('<xs:unique name="once"><xs:selector xpath="i"/><xs:field xpath="."/>'
                         "</xs:unique>", "")
    package = tmp_path / "pkg"
    write(package, "strict.xsd", strict)
    write(package, "lax.xsd", lax)
    twice = b'<p:r xmlns:p="urn:p"><i>1</i><i>1</i></p:r>'
    plain = SchemaRegistry.from_dirs([package])
    assert not plain.validate(parse_xml(twice)).valid  # the strictest variant by default
    hinted = twice.replace(b'xmlns:p="urn:p"', b'xmlns:p="urn:p" xmlns:xsi='
                           b'"http://www.w3.org/2001/XMLSchema-instance" '
                           b'xsi:schemaLocation="urn:p http://example.org/lax.xsd"')
    result = plain.validate(parse_xml(hinted))
    assert result.valid and result.schema == package / "lax.xsd"  # hint chose, not followed
    write(package, "kcbus-package.toml",
          'name = "demo"\nstandard = "Demo"\nversion = "1.0"\nentries = ["lax.xsd"]\n')
    manifest = SchemaRegistry.from_dirs([package])
    [info] = manifest.packages()
    assert (info.name, info.standard, info.version) == ("demo", "Demo", "1.0")
    assert manifest.validate(parse_xml(twice)).valid
