"""Static index of XSD files: what each file declares and what it includes or imports.

Scanning reads each schema document once (parsed like any untrusted XML: no network, no DTD
loading, no entity expansion) and keeps only facts: target namespace, global element names,
``xs:include``/``xs:redefine``/``xs:import`` locations, the number of identity constraints
(``xs:key``/``xs:keyref``/``xs:unique``) and whether the document asks for XSD 1.1
(``vc:minVersion``, XSD 1.1 Part 1 §4.2.1; or 1.1-only elements such as ``xs:assert``).

Locations are kept in three kinds: a local path (relative locations resolved against the
including file, as XSD 1.0 Part 1 §4.2.1 and RFC 3986 §5 say), or a remote URL (``http``,
``https``, ``ftp``), which is never fetched: the registry maps it to a local file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lxml import etree

from xoev._errors import ConfigurationError

__all__ = ["Location", "SchemaFileUnreadable", "XsdFile", "is_remote", "locate", "scan_file"]

XS = "http://www.w3.org/2001/XMLSchema"
VC = "http://www.w3.org/2007/XMLSchema-versioning"
_XSD11_ONLY = frozenset(
    f"{{{XS}}}{name}" for name in ("assert", "assertion", "alternative", "openContent",
                                   "defaultOpenContent", "override")
)
_CONSTRAINTS = frozenset(f"{{{XS}}}{name}" for name in ("key", "keyref", "unique"))

#: A location: a resolved local Path, or a remote URL string (never fetched).
Location = Path | str


class SchemaFileUnreadable(ConfigurationError):
    """A file in a schema package is not a readable XML Schema document."""

    reason_code = "schema-unreadable"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"schema file {path}: {problem}")


@dataclass(frozen=True)
class XsdFile:
    path: Path
    target_namespace: str | None
    elements: frozenset[str]
    includes: tuple[Location, ...]
    imports: tuple[tuple[str | None, Location], ...]
    constraints: int
    xsd11: bool
    #: ``version`` attribute of ``xs:schema`` (the schema's own version, e.g. XBau ``2.6``).
    version: str | None


def is_remote(location: str) -> bool:
    return urlsplit(location).scheme.lower() in ("http", "https", "ftp")


def locate(base: Path, location: str) -> Location:
    """Resolve a schemaLocation found in ``base``: a local Path, or a remote URL (kept as str)."""
    location = location.strip()
    if is_remote(location):
        return location
    parts = urlsplit(location)
    if parts.scheme.lower() == "file":
        return Path(unquote(parts.path)).resolve()
    return (base.parent / unquote(location)).resolve()


def _schema_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, remove_comments=True)


def scan_file(path: Path) -> XsdFile:
    try:
        root = etree.parse(str(path), _schema_parser()).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise SchemaFileUnreadable(path, type(exc).__name__) from exc
    if root.tag != f"{{{XS}}}schema":
        raise SchemaFileUnreadable(path, "root element is not xs:schema")
    includes: list[Location] = []
    imports: list[tuple[str | None, Location]] = []
    elements: set[str] = set()
    for top in root.iterchildren(tag=etree.Element):
        tag = top.tag
        location = top.get("schemaLocation")
        if tag in (f"{{{XS}}}include", f"{{{XS}}}redefine") and location:
            includes.append(locate(path, location))
        elif tag == f"{{{XS}}}import":
            if location:
                imports.append((top.get("namespace"), locate(path, location)))
        elif tag == f"{{{XS}}}element" and top.get("name"):
            elements.add(top.get("name", ""))
    constraints = 0
    xsd11 = root.get(f"{{{VC}}}minVersion", "1.0").strip() not in ("1.0", "")
    for element in root.iter(tag=etree.Element):
        if element.tag in _CONSTRAINTS:
            constraints += 1
        elif element.tag in _XSD11_ONLY:
            xsd11 = True
    return XsdFile(
        path=path,
        target_namespace=root.get("targetNamespace") or None,
        elements=frozenset(elements),
        includes=tuple(includes),
        imports=tuple(imports),
        constraints=constraints,
        xsd11=xsd11,
        version=root.get("version"),
    )
