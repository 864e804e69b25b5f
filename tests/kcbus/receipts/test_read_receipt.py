"""A partner reading a receipt goes through the hardened parser like any message."""

from __future__ import annotations

import pytest

from kcbus.receipts import read_receipt

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<quittung xmlns="urn:kcbus:quittung">&x;</quittung>"""


def test_a_receipt_with_a_doctype_is_refused_without_reading_the_entity() -> None:
    with pytest.raises(ValueError, match="xml-dtd-forbidden") as caught:
        read_receipt(XXE)
    assert "root:" not in str(caught.value)


def test_garbage_is_not_a_receipt() -> None:
    with pytest.raises(ValueError, match="not a kcbus receipt"):
        read_receipt(b"<unclosed")


def test_receipt_texts_drop_values_in_either_quote_style() -> None:
    from kcbus.receipts import redact

    text = redact('''invalid literal for int() with base 10: "O'Brien Sean"''')
    assert "Brien" not in text and "Sean" not in text
