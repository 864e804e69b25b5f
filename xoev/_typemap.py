"""Which schema type each element of a document has: a small post-schema-validation view.

libxml2 (through lxml) exposes no type information after validation, and its attribute-default
completion only covers attribute uses declared in the main schema document, not in imported
ones (measured on libxml2 2.14), so the XÖV code-list check cannot rely on it for the
``listURI``/``listVersionID`` values fixed in imported library types. This module walks the
document alongside xmlschema's component model instead: for each element, the declaration that
matches its name in the parent type's content model (substitution groups and ``xsi:type``
included; wildcards with ``processContents="skip"`` end the walk below them).

Invariant: the walk is only meaningful for a document the reference validator accepted; for
anything it cannot place (unknown child, skipped wildcard) it yields nothing below it rather
than guessing. Lookups are memoized per (type, child name): O(elements) dictionary work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import xmlschema
from lxml import etree
from xmlschema.validators import XsdAnyElement, XsdElement

__all__ = ["TypeWalker"]

_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


class TypeWalker:
    def __init__(self, schema: xmlschema.XMLSchemaBase) -> None:
        self._schema = schema
        self._children: dict[tuple[int, str], XsdElement | None] = {}

    def iter_types(self, root: etree._Element) -> Iterator[tuple[etree._Element, Any]]:
        """(element, xmlschema type) for every element the walk can place."""
        declaration = self._schema.maps.elements.get(root.tag)
        if declaration is None:
            return
        stack: list[tuple[etree._Element, XsdElement]] = [(root, declaration)]
        while stack:
            element, declaration = stack.pop()
            xsd_type = self._type_of(element, declaration)
            yield element, xsd_type
            if not xsd_type.is_complex() or not getattr(xsd_type, "has_complex_content",
                                                        lambda: False)():
                continue
            for child in element.iterchildren(tag=etree.Element):
                child_declaration = self._child(xsd_type, child.tag)
                if child_declaration is not None:
                    stack.append((child, child_declaration))

    # xmlschema's type classes (simple, complex, atomic, union...) share no narrow base: Any.
    def _type_of(self, element: etree._Element, declaration: XsdElement) -> Any:
        xsi_type = element.get(_XSI_TYPE)
        if xsi_type:
            prefix, _, local = xsi_type.strip().rpartition(":")
            namespace = element.nsmap.get(prefix or None)
            found = self._schema.maps.types.get(f"{{{namespace}}}{local}" if namespace else local)
            if found is not None:
                return found
        return declaration.type

    def _child(self, parent_type: Any, tag: str) -> XsdElement | None:
        key = (id(parent_type), tag)
        if key in self._children:
            return self._children[key]
        found: XsdElement | None = None
        content = getattr(parent_type, "content", None)
        if content is not None:
            for particle in content.iter_elements():
                if isinstance(particle, XsdAnyElement):
                    if particle.process_contents != "skip" and particle.is_matching(tag):
                        found = self._schema.maps.elements.get(tag)
                        if found is not None:
                            break
                    continue
                if particle.name == tag:
                    found = particle
                    break
                if particle.is_matching(tag):  # a member of the head's substitution group
                    found = self._schema.maps.elements.get(tag, particle)
                    break
        self._children[key] = found
        return found
