"""Code lists: OASIS genericode 1.0 loading and the XÖV ``xoev-code:Code`` check.

XÖV code values are elements of type ``xoev-code:Code`` (or a restriction of it)::

    <nachrichtentyp listURI="urn:xoev-de:xbau:codeliste:xbau-nachrichten" listVersionID="4.0">
      <code>0200</code>
    </nachrichtentyp>

The XÖV-Handbuch distinguishes four code-list types by where ``listURI``/``listVersionID``
come from:

* type 1 — the values are an ``xs:enumeration`` in the schema: schema validation checks them;
* type 2 — ``listURI`` and ``listVersionID`` are fixed in the schema (``fixed=``), the message
  may omit them;
* type 3 — ``listURI`` is fixed in the schema, ``listVersionID`` is sent in the message;
* type 4 — both are sent in the message.

So the effective ``listURI``/``listVersionID`` of a code is the message's attribute, else the
schema's fixed/default value. With a registry, code elements are found by their schema type
(``SchemaRegistry.code_values``: any type with ``listURI`` and ``listVersionID`` attributes, as
``xoev-code:Code`` and its restrictions have) and the schema's values come from the type.
Without one, they are recognised structurally (an element whose first child is the unqualified
``code`` of ``xoev-code:Code``) and only what the message sends is seen.

Invariants: every code in the document is either checked against a loaded list (an issue if
it is not in it), or reported in ``not_checked`` with its list and version — never silently
passed. Issue texts name the list, version and XPath, never the code value (it may be data
about a person, e.g. a nationality).

"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from xoev._errors import ConfigurationError
from xoev._parse import ParseLimits, XmlRejected, parse_xml
from xoev._paths import xpath_of

if TYPE_CHECKING:
    from xoev._schemas import SchemaRegistry

__all__ = ["CodeIssue", "CodeList", "CodeListReport", "CodeListUnreadable", "CodeLists"]

GC = "http://docs.oasis-open.org/codelist/ns/genericode/1.0/"
_LIST_LIMITS = ParseLimits(max_bytes=256 * 1024 * 1024, max_elements=50_000_000)


class CodeListUnreadable(ConfigurationError):
    """A file in the code-list directory is not a readable genericode list."""

    reason_code = "codelist-unreadable"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"code list {path}: {problem}")


@dataclass(frozen=True)
class CodeList:
    """One version of one code list (genericode ``CanonicalUri`` + ``Version``)."""

    uri: str
    version: str
    short_name: str | None
    codes: frozenset[str]

    def __contains__(self, code: object) -> bool:
        return code in self.codes

    def __repr__(self) -> str:
        return f"CodeList({self.uri!r}, {self.version!r}, {len(self.codes)} codes)"


@dataclass(frozen=True)
class CodeIssue:
    """A code that fails its list. ``problem`` never contains the code value."""

    line: int | None
    path: str
    list_uri: str | None
    list_version: str | None
    problem: str

    @property
    def message(self) -> str:
        where = f"{self.list_uri} version {self.list_version}" if self.list_uri else "code list"
        return f"{self.problem} ({where})"


@dataclass(frozen=True)
class CodeListReport:
    """Result of a code-list check."""

    issues: tuple[CodeIssue, ...]
    #: (listURI, listVersionID) of codes whose list is not loaded: not checked, not passed.
    not_checked: tuple[tuple[str, str | None], ...]
    checked: int

    @property
    def ok(self) -> bool:
        return not self.issues


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def load_genericode(path: Path) -> CodeList:
    try:
        tree = parse_xml(path.read_bytes(), limits=_LIST_LIMITS)
    except (OSError, XmlRejected) as exc:
        raise CodeListUnreadable(path, type(exc).__name__) from exc
    root = tree.getroot()
    if root.tag != f"{{{GC}}}CodeList":
        raise CodeListUnreadable(path, "not a genericode CodeList")
    ident = root.find("Identification")
    uri = _text(ident.find("CanonicalUri")) if ident is not None else None
    version = _text(ident.find("Version")) if ident is not None else None
    if not uri or not version:
        raise CodeListUnreadable(path, "Identification lacks CanonicalUri or Version")
    columns = [c.get("Id", "") for c in root.iterfind("ColumnSet/Column")]
    key_ref = root.find("ColumnSet/Key/ColumnRef")
    key = key_ref.get("Ref") if key_ref is not None else ("code" if "code" in columns else None)
    if key is None and columns:
        key = columns[0]
    codes: set[str] = set()
    for row in root.iterfind("SimpleCodeList/Row"):
        position = -1
        for value in row.iterfind("Value"):
            # genericode 1.0 §3.7: a Value without ColumnRef is in the column after the
            # previous Value's column.
            ref = value.get("ColumnRef")
            position = columns.index(ref) if ref in columns else position + 1
            column = ref or (columns[position] if position < len(columns) else None)
            if column == key:
                code = _text(value.find("SimpleValue"))
                if code is not None:
                    codes.add(code)
    return CodeList(uri, version, _text(ident.find("ShortName")) if ident is not None else None,
                    frozenset(codes))


class CodeLists:
    """Loaded code lists, by (canonical URI, version)."""

    def __init__(self, lists: Iterable[CodeList] = ()) -> None:
        self._lists: dict[tuple[str, str], CodeList] = {}
        for code_list in lists:
            self._lists[(code_list.uri, code_list.version)] = code_list

    @classmethod
    def from_dir(cls, directory: Path | str) -> CodeLists:
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigurationError(f"code-list directory not found: {directory}")
        lists = [load_genericode(path) for path in sorted(directory.rglob("*.xml"))]
        if not lists:
            raise ConfigurationError(f"no genericode lists in {directory}")
        return cls(lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __iter__(self) -> Iterator[CodeList]:
        return iter(self._lists.values())

    def get(self, uri: str, version: str) -> CodeList | None:
        return self._lists.get((uri, version))

    def versions(self, uri: str) -> tuple[str, ...]:
        return tuple(sorted(v for u, v in self._lists if u == uri))

    def check(self, tree: etree._ElementTree | etree._Element, *,
              registry: SchemaRegistry | None = None) -> CodeListReport:
        """Check every ``xoev-code:Code`` value. With ``registry``, list URIs and versions
        fixed in the schema (code-list types 2 and 3) are taken into account; without it only
        what the message sends is seen."""
        root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
        if registry is not None:
            return self.check_codes(registry.code_values(root))
        return self.check_codes(iter_codes(root))

    def check_codes(self, codes: Iterable[tuple[etree._Element, str | None, str | None,
                                                 str | None]]) -> CodeListReport:
        issues: list[CodeIssue] = []
        not_checked: dict[tuple[str, str | None], None] = {}
        checked = 0
        for element, uri, version, code in codes:

            def issue(list_uri: str | None, list_version: str | None, problem: str,
                      element: etree._Element = element) -> CodeIssue:
                # The XPath is built only for issues: it walks siblings, O(depth x width).
                line: int | None = element.sourceline  # type: ignore[assignment]
                return CodeIssue(line, xpath_of(element), list_uri, list_version, problem)

            if not uri:
                issues.append(issue(None, version, "listURI missing"))
                continue
            if not version:
                if self.versions(uri):
                    issues.append(issue(uri, None, "listVersionID missing"))
                else:
                    not_checked.setdefault((uri, None))
                continue
            code_list = self._lists.get((uri, version))
            if code_list is None:
                not_checked.setdefault((uri, version))
                continue
            checked += 1
            if code is None:
                issues.append(issue(uri, version, "code missing"))
            elif code not in code_list:
                issues.append(issue(uri, version, "code not in code list"))
        return CodeListReport(tuple(issues), tuple(not_checked), checked)


def iter_codes(root: etree._Element) -> Iterator[tuple[etree._Element, str | None, str | None,
                                                       str | None]]:
    """(element, listURI, listVersionID, code) of every ``xoev-code:Code`` element."""
    for code_element in root.iter("code"):  # unqualified ``code`` only
        parent = code_element.getparent()
        if parent is None:
            continue
        first = next(parent.iterchildren(tag=etree.Element), None)
        if first is not code_element:
            continue
        yield (parent, parent.get("listURI") or None, parent.get("listVersionID") or None,
               _text(code_element))
