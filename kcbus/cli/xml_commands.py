"""``kcbus validate``, ``kcbus inspect`` and ``kcbus schemas list``: the xoev core on the CLI.

Output contract (other checks parse it):

* ``validate``: one line per file, ``FILE: valid STANDARD VERSION MESSAGETYPE`` or
  ``FILE: invalid`` followed by indented ``line N: XPATH: reason`` lines (``line ?`` when the
  problem has no line, e.g. an unreadable file). Codes whose list is not loaded follow a valid
  or invalid line as indented ``not checked: LISTURI version V`` lines. ``--json`` prints one
  JSON array of ``{file, valid, standard, version, message_type, errors: [{line, path,
  message}], not_checked: [{list_uri, list_version}]}``.
  Exit 0 if every file is valid, 1 if any is invalid or unreadable, 2 for a usage or
  configuration error (missing schema directory, a package that does not compile).
* ``inspect``: the header facts, ``name: value`` per line, or ``--json``.
* ``schemas list``: packages in precedence order, their namespaces (with the package that
  shadows a namespace supplied twice), message types, remote URLs mapped to local files, and
  compile times.

Reasons never contain message content: validation messages are redacted by ``xoev``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from xoev import (
    BadHeader,
    CodeLists,
    MessageHeader,
    NoSchema,
    Party,
    SchemaRegistry,
    UnknownDocument,
    XmlRejected,
    parse_xml,
    read_header,
)

__all__ = ["register"]

EXIT_OK = 0
EXIT_INVALID = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subparsers.add_parser(
        "validate", help="validate XML messages against schema packages",
        description="Validate XML files (hardened parsing, schema, optional code lists).",
    )
    validate.add_argument("--schemas", metavar="DIR", action="append", required=True,
                          type=Path, help="schema package directory (repeatable; first wins)")
    validate.add_argument("--codelists", metavar="DIR", type=Path,
                          help="directory of genericode code lists to check codes against")
    validate.add_argument("--diagnose", action="store_true",
                          help="for invalid files, add xmlschema's diagnostics (informative)")
    validate.add_argument("--json", action="store_true", help="print a JSON array")
    validate.add_argument("files", metavar="FILE", nargs="+", type=Path)
    validate.set_defaults(handler=_validate)

    inspect = subparsers.add_parser("inspect", help="show a message's header facts",
                                    description="Show the routing facts of one message.")
    inspect.add_argument("file", metavar="FILE", type=Path)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_inspect)

    schemas = subparsers.add_parser("schemas", help="schema packages",
                                    description="Inspect schema packages.")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    listing = schemas_sub.add_parser(
        "list", help="packages, namespaces, message types, compile times",
        description="List schema packages in precedence order and compile their messages.",
    )
    listing.add_argument("--schemas", metavar="DIR", action="append", required=True, type=Path)
    listing.add_argument("--no-compile", action="store_true",
                         help="do not compile (skip compile times)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_schemas_list)


# -- validate ---------------------------------------------------------------------------------


@dataclass
class _Outcome:
    file: str
    valid: bool = False
    standard: str | None = None
    version: str | None = None
    message_type: str | None = None
    errors: list[tuple[int | None, str, str]] = field(default_factory=list)
    not_checked: list[tuple[str, str | None]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "valid": self.valid,
            "standard": self.standard,
            "version": self.version,
            "message_type": self.message_type,
            "errors": [{"line": line, "path": path, "message": message}
                       for line, path, message in self.errors],
            "not_checked": [{"list_uri": uri, "list_version": version}
                            for uri, version in self.not_checked],
        }

    def as_text(self) -> str:
        if self.valid:
            facts = " ".join(v or "-" for v in (self.standard, self.version, self.message_type))
            lines = [f"{self.file}: valid {facts}"]
        else:
            lines = [f"{self.file}: invalid"]
            for line, path, message in self.errors:
                lines.append(f"  line {line if line is not None else '?'}: {path}: {message}")
        for uri, version in self.not_checked:
            lines.append(f"  not checked: {uri} version {version or '?'}")
        return "\n".join(lines)


def _validate(args: argparse.Namespace) -> int:
    registry = SchemaRegistry.from_dirs(args.schemas)
    codelists = CodeLists.from_dir(args.codelists) if args.codelists else None
    outcomes = [_validate_one(path, registry, codelists, diagnose=args.diagnose)
                for path in args.files]
    if args.json:
        print(json.dumps([o.as_json() for o in outcomes], indent=2, ensure_ascii=False))
    else:
        for outcome in outcomes:
            print(outcome.as_text())
    return EXIT_OK if all(o.valid for o in outcomes) else EXIT_INVALID


def _validate_one(path: Path, registry: SchemaRegistry, codelists: CodeLists | None, *,
                  diagnose: bool) -> _Outcome:
    outcome = _Outcome(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        outcome.errors.append((None, "/", f"cannot read file ({type(exc).__name__})"))
        return outcome
    try:
        tree = parse_xml(data)
    except XmlRejected as exc:
        outcome.errors.append((getattr(exc, "line", None), "/", str(exc)))
        return outcome
    root = tree.getroot()
    header: MessageHeader | None = None
    try:
        header = read_header(tree)
    except (UnknownDocument, BadHeader):
        header = None  # the schema decides validity; the header only labels the result
    try:
        result = registry.validate(tree)
    except NoSchema as exc:
        line: int | None = root.sourceline  # type: ignore[assignment]
        outcome.errors.append((line, f"/{root.prefix + ':' if root.prefix else ''}"
                               f"{etree.QName(root).localname}", str(exc)))
        return outcome
    outcome.valid = result.valid
    outcome.errors.extend((i.line, i.path, i.message) for i in result.errors)
    if not result.valid and diagnose:
        extra = registry.diagnose(tree)
        outcome.errors.extend((i.line, i.path, f"xmlschema: {i.message}") for i in extra.errors)
    if codelists is not None:
        report = codelists.check(tree, registry=registry)
        outcome.not_checked = list(report.not_checked)
        if report.issues:
            outcome.valid = False
            outcome.errors.extend((i.line, i.path, i.message) for i in report.issues)
    outcome.errors.sort(key=lambda e: (e[0] is None, e[0] or 0))
    if header is not None:
        outcome.standard, outcome.version = header.standard, header.version
        outcome.message_type = header.message_type
    else:
        outcome.message_type = etree.QName(root).localname
    return outcome


# -- inspect ----------------------------------------------------------------------------------


def _party_json(party: Party | None) -> dict[str, str | None] | None:
    if party is None:
        return None
    return {"verzeichnisdienst": party.verzeichnisdienst, "kennung": party.kennung,
            "name": party.name}


def _party_text(party: Party | None) -> str:
    if party is None:
        return "-"
    return party.address + (f" ({party.name})" if party.name else "")


def _inspect(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        sys.stderr.write(f"kcbus: {path}: cannot read file ({type(exc).__name__})\n")
        return EXIT_INVALID
    header = read_header(parse_xml(data))
    facts: dict[str, object] = {
        "profile": header.profile,
        "root": header.root,
        "message_id": header.message_id,
        "message_type": header.message_type,
        "created": header.created.isoformat() if header.created else None,
        "standard": header.standard,
        "version": header.version,
        "test": header.test,
        "author": _party_json(header.author),
        "readers": [_party_json(r) for r in header.readers],
        "process_id": header.process_id,
        "revision": header.revision,
        "custodian": _party_json(header.custodian),
        "subject_ref": header.subject_ref,
    }
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return EXIT_OK
    labels = {"process_id": "process_id (setId)" if header.profile == "hl7-cda-r2" else
              "process_id", "subject_ref": "patient" if header.profile == "hl7-cda-r2" else
              "subject_ref"}
    for key, value in facts.items():
        if key == "author" or key == "custodian":
            shown = _party_text(header.author if key == "author" else header.custodian)
        elif key == "readers":
            shown = ", ".join(_party_text(r) for r in header.readers) or "-"
        elif value is None:
            shown = "-"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
        print(f"{labels.get(key, key)}: {shown}")
    return EXIT_OK


# -- schemas list -----------------------------------------------------------------------------


def _schemas_list(args: argparse.Namespace) -> int:
    # xoev is sans-IO: the clock for the compile times comes from here.
    registry = SchemaRegistry.from_dirs(args.schemas, clock=time.perf_counter)
    packages = []
    for info in registry.packages():
        owned = {ns.namespace for ns in info.namespaces if ns.shadowed_by is None}
        compiles = []
        if not args.no_compile:
            entries: dict[Path, list[str]] = {}
            for namespace, local in registry.message_types(info.name):
                if namespace in owned:
                    entries.setdefault(registry.entry_for_element(namespace, local),
                                       []).append(local)
            for entry in sorted(entries):
                report = registry.compile(entry)
                compiles.append({
                    "entry": str(entry), "seconds": round(report.seconds, 4),
                    "engine": report.engine, "message_types": len(entries[entry]),
                    "merged_namespaces": list(report.merged),
                    "unmerged_namespaces": list(report.unmerged),
                    "unresolved_urls": list(report.unresolved),
                })
        packages.append({
            "name": info.name, "path": str(info.path), "files": info.files,
            "standard": info.standard, "version": info.version,
            "namespaces": [{"namespace": ns.namespace, "files": ns.files,
                            "shadowed_by": ns.shadowed_by} for ns in info.namespaces],
            "message_types": list(info.message_types),
            "compiled": compiles,
        })
    url_map = {url: str(path) for url, path in sorted(registry.url_map().items())}
    if args.json:
        print(json.dumps({"packages": packages, "url_map": url_map}, indent=2))
        return EXIT_OK
    for order, package in enumerate(packages, 1):
        _print_package(order, package)
    if url_map:
        print("remote schemaLocations resolved offline:")
        for url, path in url_map.items():
            print(f"  {url} -> {path}")
    return EXIT_OK


def _print_package(order: int, package: dict[str, object]) -> None:
    label = " ".join(str(v) for v in (package["standard"], package["version"]) if v)
    print(f"{order}. {package['name']}{' (' + label + ')' if label else ''}: "
          f"{package['path']}, {package['files']} files")
    namespaces = package["namespaces"]
    assert isinstance(namespaces, list)
    for ns in namespaces:
        state = f"shadowed by {ns['shadowed_by']}" if ns["shadowed_by"] else "used"
        print(f"   namespace {ns['namespace'] or '(none)'}: {ns['files']} files, {state}")
    types = package["message_types"]
    assert isinstance(types, list)
    print(f"   message types ({len(types)}): {', '.join(types) if types else '-'}")
    compiled = package["compiled"]
    assert isinstance(compiled, list)
    for item in compiled:
        notes = []
        if item["merged_namespaces"]:
            notes.append("merged " + ", ".join(item["merged_namespaces"]))
        if item["unmerged_namespaces"]:
            notes.append("only first import used for " + ", ".join(item["unmerged_namespaces"]))
        if item["unresolved_urls"]:
            notes.append("not fetched " + ", ".join(item["unresolved_urls"]))
        suffix = f"; {'; '.join(notes)}" if notes else ""
        print(f"   compiled {Path(item['entry']).name} in {item['seconds']:.3f} s "
              f"({item['engine']}, {item['message_types']} message types{suffix})")
