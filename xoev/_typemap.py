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
        self._complex: dict[int, bool] = {}
        self._codes: dict[int, tuple[str | None, str | None] | None] = {}

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
            if not self._has_children(xsd_type):
                continue
            for child in element.iterchildren(tag=etree.Element):
                child_declaration = self._child(xsd_type, child.tag)
                if child_declaration is not None:
                    stack.append((child, child_declaration))

    def iter_codes(
        self, root: etree._Element
    ) -> Iterator[tuple[etree._Element, str | None, str | None]]:
        """(element, listURI, listVersionID) of every element whose type has both attributes
        (``xoev-code:Code`` and its restrictions): the message's value, else the schema's
        fixed or default value.

        Only elements that look like codes (first child an unqualified ``code``, found by
        libxml2 in C) are typed, each through its ancestor chain with shared prefixes
        resolved once: a code check costs a fraction of a full walk."""
        declaration = self._schema.maps.elements.get(root.tag)
        if declaration is None:
            return
        types: dict[etree._Element, Any] = {root: self._type_of(root, declaration)}
        for code in root.iter("code"):
            element = code.getparent()
            if element is None or next(element.iterchildren(tag=etree.Element)) is not code:
                continue
            fixed = self._code_attributes(self._resolve(element, types))
            if fixed is not None:
                yield (element, element.get("listURI") or fixed[0],
                       element.get("listVersionID") or fixed[1])

    def _resolve(self, element: etree._Element, types: dict[etree._Element, Any]) -> Any:
        chain = []
        current: etree._Element | None = element
        while current is not None and current not in types:
            chain.append(current)
            current = current.getparent()
        if current is None:
            return None
        xsd_type = types[current]
        for step in reversed(chain):
            if xsd_type is not None and self._has_children(xsd_type):
                child = self._child(xsd_type, step.tag)
                xsd_type = None if child is None else self._type_of(step, child)
            else:
                xsd_type = None
            types[step] = xsd_type
        return xsd_type

    def _has_children(self, xsd_type: Any) -> bool:
        key = id(xsd_type)
        known = self._complex.get(key)
        if known is None:
            known = self._complex[key] = bool(
                xsd_type.is_complex() and xsd_type.has_complex_content())
        return known

    def _code_attributes(self, xsd_type: Any) -> tuple[str | None, str | None] | None:
        if xsd_type is None:
            return None
        key = id(xsd_type)
        if key not in self._codes:
            attributes = getattr(xsd_type, "attributes", None)
            if attributes is not None and "listURI" in attributes and \
                    "listVersionID" in attributes:
                self._codes[key] = (_fixed(attributes["listURI"]),
                                    _fixed(attributes["listVersionID"]))
            else:
                self._codes[key] = None
        return self._codes[key]

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


def _fixed(attribute: object) -> str | None:
    value = getattr(attribute, "fixed", None) or getattr(attribute, "default", None)
    return str(value) if value else None
