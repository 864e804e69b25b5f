"""xoev benchmarks (issue 2), on one core.

* ``xoev validate 20 KB XBau from bytes``: hardened ``parse_xml`` + ``read_header`` + libxml2
  validation of a ~20 KB ``baugenehmigung.antrag.0200`` (the test message with 40 attachment
  entries), messages/s; goal ≥ 1,500 (value). Baseline: xmlschema validating the same bytes
  against the same schema (what a pure-Python validator gives).
* ``xoev validate pre-parsed``: libxml2 validation of an already parsed tree, beside the same
  from bytes: how much of the cost is parsing + header.
* ``xoev code-list check``: the XÖV code-list check of the same message (each
  ``xoev-code:Code`` typed through the schema, list URI/version from message or schema),
  beside validation from bytes.
* ``xoev compile XBau``: milliseconds to compile ``xbau-nachrichten-baugenehmigung.xsd`` offline
  (release set resolved against complete/), lower is better, beside xmlschema's compile.
* ``xoev compile NeTEx`` (not with ``--quick``): seconds for ``NeTEx_publication.xsd`` with
  libxml2, beside its ``-NoConstraint`` twin: the price of the identity constraints.
* ``xoev refuse billion laughs``: µs to reject the 10-level billion-laughs document, beside
  parsing a valid document of the same size (the rejection must be as cheap as a parse).

Compile figures are taken in fresh subprocesses: the registry caches compiled schemas per
process, which is the point of it, but would hide the compile cost here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from bench import Figure, one_core, rate

ROOT = Path(__file__).resolve().parent.parent
STANDARDS = ROOT.parent / "shared" / "standards"
MESSAGE = ROOT / "tests" / "xoev" / "data" / "xbau-baugenehmigung-antrag-0200.xml"

__all__ = ["run", "xbau_message"]


def xbau_message(size: int = 20_000) -> bytes:
    """A valid XBau 2.6 ``baugenehmigung.antrag.0200`` of about ``size`` bytes: the test
    message with its ``anlage`` entry repeated (a Bauantrag lists each Bauvorlage)."""
    data = MESSAGE.read_bytes()
    start = data.index(b"    <anlage>")
    end = data.index(b"</anlage>\n", start) + len(b"</anlage>\n")
    entry = data[start:end]
    copies = max(1, (size - (len(data) - len(entry))) // len(entry))
    return data[:start] + entry * copies + data[end:]


def _compile_seconds(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT, timeout=900)
    return float(done.stdout.strip().splitlines()[-1])


_XBAU_LXML = f"""
import time
from pathlib import Path
from xoev import SchemaRegistry
s = Path({str(STANDARDS)!r})
registry = SchemaRegistry.from_dirs([s / "xbau-2.6/release", s / "xbau-2.6/complete"],
                                    clock=time.perf_counter)
print(registry.compile(s / "xbau-2.6/release/xbau-nachrichten-baugenehmigung.xsd").seconds)
"""

_XBAU_XMLSCHEMA = f"""
import time, xmlschema
t = time.perf_counter()
xmlschema.XMLSchema10({str(STANDARDS / "xbau-2.6/complete/xbau-nachrichten-baugenehmigung.xsd")!r},
                      allow="local", defuse="always")
print(time.perf_counter() - t)
"""

_NETEX = """
import time
from pathlib import Path
from xoev import SchemaRegistry
xsd = Path({xsd!r})
print(SchemaRegistry.from_dirs([xsd.parent], clock=time.perf_counter).compile(xsd).seconds)
"""


def run(args: argparse.Namespace) -> Iterable[Figure]:
    import xmlschema

    from xoev import CodeLists, SchemaRegistry, parse_xml, read_header

    message = xbau_message()
    registry = SchemaRegistry.from_dirs([STANDARDS / "xbau-2.6/release",
                                         STANDARDS / "xbau-2.6/complete"])
    tree = parse_xml(message)
    first = registry.validate(tree)  # compiles once (per-process cache)
    if not first.valid:
        raise RuntimeError(f"benchmark message is invalid: {first.errors[:1]}")
    entry = first.schema
    assert entry is not None
    slow = xmlschema.XMLSchema10(str(STANDARDS / "xbau-2.6/complete" / entry.name),
                                 allow="local", defuse="always")

    def from_bytes() -> None:
        parsed = parse_xml(message)
        read_header(parsed)
        if not registry.validate(parsed).valid:
            raise RuntimeError("invalid")

    def pre_parsed() -> None:
        registry.validate(tree)

    def with_xmlschema() -> None:
        slow.validate(message)

    seconds = 0.5 if args.quick else 2.0
    with one_core():
        ours = rate(from_bytes, min_seconds=seconds)
        parsed_rate = rate(pre_parsed, min_seconds=seconds)
        baseline = rate(with_xmlschema, min_seconds=seconds, min_calls=3)
    size_kb = len(message) / 1000
    yield Figure(f"xoev validate {size_kb:.0f} KB XBau from bytes", ours, "msg/s",
                 "xmlschema validate", baseline, goal=1500, goal_on="value")
    yield Figure("xoev validate pre-parsed (libxml2 only)", parsed_rate, "msg/s",
                 "xoev from bytes", ours)

    lists = CodeLists.from_dir(STANDARDS / "xbau-2.6/codelists")
    lists.check(tree, registry=registry)  # builds the xmlschema twin once

    with one_core():
        checked = rate(lambda: lists.check(tree, registry=registry), min_seconds=seconds)
    yield Figure("xoev code-list check 20 KB XBau (types 2-4)", checked, "msg/s",
                 "xoev validate from bytes", ours)

    laughs = _billion_laughs()
    plain = b"<lolz>" + b"<a>lol</a>" * ((len(laughs) - 13) // 10) + b"</lolz>"

    def refuse() -> None:
        try:
            parse_xml(laughs)
        except Exception:
            return
        raise RuntimeError("billion laughs was accepted")

    with one_core():
        refused = rate(refuse, min_seconds=seconds)
        parsed_plain = rate(lambda: parse_xml(plain), min_seconds=seconds)
    yield Figure("xoev refuse billion laughs", 1e6 / refused, "µs", "parse same-size valid doc",
                 1e6 / parsed_plain, lower_is_better=True)

    lxml_compile = _compile_seconds(_XBAU_LXML)
    xmlschema_compile = _compile_seconds(_XBAU_XMLSCHEMA)
    yield Figure("xoev compile XBau baugenehmigung (libxml2)", lxml_compile * 1000, "ms",
                 "xmlschema compile", xmlschema_compile * 1000, lower_is_better=True)
    if not args.quick:
        netex = STANDARDS / "netex-2.0/xsd"
        full = _compile_seconds(_NETEX.format(xsd=str(netex / "NeTEx_publication.xsd")))
        bare = _compile_seconds(
            _NETEX.format(xsd=str(netex / "NeTEx_publication-NoConstraint.xsd")))
        yield Figure("xoev compile NeTEx publication (libxml2)", full, "s",
                     "NeTEx -NoConstraint compile", bare, lower_is_better=True)


def _billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n' + "\n".join(entities)
            + "\n]>\n<lolz>&lol9;</lolz>").encode()
