"""Readable XPaths for error reports.

libxml2 writes ``*[n]`` for an element in a default namespace (``/*/*[1]``), which no operator
can read. Reports use the document's own prefixes where it has them and the local name where
it uses a default namespace (``/PublicationDelivery/PublicationTimestamp``), with ``[n]`` only
where same-named siblings repeat. The result is for people and receipts; evaluating it needs
the document's namespace bindings.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["readable_path", "xpath_of"]


def xpath_of(element: etree._Element) -> str:
    """An XPath like libxml2 reports: prefixed names, ``[n]`` only where siblings repeat."""
    steps = []
    current: etree._Element | None = element
    while current is not None:
        qname = etree.QName(current)
        name = f"{current.prefix}:{qname.localname}" if current.prefix else qname.localname
        parent = current.getparent()
        if parent is not None:
            same = [c for c in parent.iterchildren(tag=current.tag)]
            if len(same) > 1:
                name += f"[{same.index(current) + 1}]"
        steps.append(name)
        current = parent
    return "/" + "/".join(reversed(steps))


def readable_path(document: etree._ElementTree, libxml2_path: str) -> str:
    """Turn libxml2's node path into :func:`xpath_of` form (unchanged if it cannot)."""
    if not libxml2_path.startswith("/"):
        return libxml2_path
    try:
        found = document.xpath(libxml2_path)
    except etree.XPathError:
        return libxml2_path
    if isinstance(found, list) and len(found) == 1 and isinstance(found[0], etree._Element):
        return xpath_of(found[0])
    return libxml2_path
