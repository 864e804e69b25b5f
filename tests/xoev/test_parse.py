"""Hardened parsing: the bad-input corpus, generated here, each refused with a typed error
whose text never carries the rejected content."""

from __future__ import annotations

import resource
import socket
import threading
from collections.abc import Iterator

import pytest

from xoev import (
    BadEncoding,
    ForbiddenDtd,
    Malformed,
    ParseLimits,
    PartnerFault,
    TooDeep,
    TooLarge,
    TooManyElements,
    XmlRejected,
    parse_xml,
)

SECRET = "kcbus-secret-7d1f"  # stands for content that must never reach an error text


@pytest.fixture
def http_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A local TCP listener that records every connection: proof of no network access."""
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
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + SECRET.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", hits
    stop.set()
    thread.join()
    server.close()


def billion_laughs(levels: int = 10) -> bytes:
    """The classic: ten entities, each ten references to the previous one (10**9 copies)."""
    entities = [f'<!ENTITY lol0 "{SECRET}">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    ]
    body = "\n".join(entities)
    return (f'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n{body}\n]>\n'
            f"<lolz>&lol{levels - 1};</lolz>").encode()


def assert_clean(error: XmlRejected, *forbidden: str) -> None:
    text = f"{error} {error!r}"
    for needle in (SECRET, "root:x:0:0", *forbidden):
        assert needle not in text
    assert isinstance(error, PartnerFault)
    assert error.reason_code.startswith("xml-")


def test_billion_laughs_is_refused_without_memory_growth() -> None:
    data = billion_laughs()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(20):
        with pytest.raises(ForbiddenDtd) as caught:
            parse_xml(data)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20 * 1024  # expanded, it would be 10**9 * len(SECRET) bytes
    assert caught.value.line == 2
    assert_clean(caught.value, "lol")


def test_quadratic_blowup_is_refused() -> None:
    big = "x" * 50_000
    data = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "{big}{SECRET}">]>'
            f"<r>{'&a;' * 50_000}</r>").encode()
    with pytest.raises(ForbiddenDtd) as caught:
        parse_xml(data)
    assert_clean(caught.value)


def test_xxe_file_entity_is_refused() -> None:
    data = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<r>&x;</r>'
    with pytest.raises(ForbiddenDtd) as caught:
        parse_xml(data)
    assert_clean(caught.value, "/etc/passwd", "file://")


def test_xxe_http_entity_is_refused_without_a_connection(
    http_listener: tuple[str, list[bytes]],
) -> None:
    url, hits = http_listener
    for data in (
        f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/x">]><r>&x;</r>'.encode(),
        f'<!DOCTYPE r SYSTEM "{url}/r.dtd"><r/>'.encode(),
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]><r/>'.encode(),
    ):
        with pytest.raises(ForbiddenDtd) as caught:
            parse_xml(data)
        assert_clean(caught.value, url)
    assert hits == []


def test_undeclared_entity_without_dtd_is_malformed() -> None:
    with pytest.raises(Malformed) as caught:
        parse_xml(b"<r>\n<a>&secret;</a></r>")
    assert caught.value.line == 2
    assert_clean(caught.value, "secret;")


def test_doctype_after_comment_and_pi_is_still_found() -> None:
    data = b'<?xml version="1.0"?>\n<!-- hi -->\n<?pi x?>\n<!doctype r>\n<r/>'
    with pytest.raises(ForbiddenDtd) as caught:
        parse_xml(data)
    assert caught.value.line == 4


def test_oversized_document_is_refused_before_parsing() -> None:
    data = b"<r>" + b"<a>x</a>" * 1000 + b"</r>"
    with pytest.raises(TooLarge) as caught:
        parse_xml(data, limits=ParseLimits(max_bytes=4096))
    assert (caught.value.size, caught.value.limit) == (len(data), 4096)


def test_truncated_document_is_malformed_with_its_line(xbau_message: bytes) -> None:
    cut = xbau_message[: len(xbau_message) // 2]
    with pytest.raises(Malformed) as caught:
        parse_xml(cut)
    assert caught.value.line is not None
    assert caught.value.line >= cut.count(b"\n")
    assert_clean(caught.value, "Erika", "Beispiel")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ('<?xml version="1.0" encoding="UTF-8"?>\n<r>Grüße</r>'.encode("latin-1"),
         "not valid UTF-8"),
        ('<?xml version="1.0" encoding="UTF-8"?><r>x</r>'.encode("utf-16"),
         "contradicts"),
        (b'<?xml version="1.0" encoding="UTF-16"?><r>x</r>', "contradicts"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><r/>'.encode("utf-8-sig"), "contradicts"),
        (b'<?xml version="1.0" encoding="x-kcbus-secret-7d1f"?><r/>', "unknown encoding"),
        ('<?xml version="1.0" encoding="US-ASCII"?><r>Grüße</r>'.encode(), "not valid US-ASCII"),
        ("<r/>".encode("utf-32"), "unsupported"),
        (b'<?xml version="1.0" encoding="windows-1252"?><r/>', "not accepted"),
    ],
    ids=["latin1-declared-utf8", "utf16-declared-utf8", "utf8-declared-utf16",
         "bom-utf8-declared-latin1", "unknown-name", "non-ascii-declared-ascii", "utf32",
         "not-allowed"],
)
def test_wrong_encodings_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(BadEncoding) as caught:
        parse_xml(data)
    assert problem in str(caught.value)
    assert_clean(caught.value, "Grüße")


def test_invalid_utf8_reports_the_line() -> None:
    data = '<?xml version="1.0"?>\n<r>\n<a>ok</a>\n<b>Grüße</b></r>'.encode("latin-1")
    with pytest.raises(BadEncoding) as caught:
        parse_xml(data)
    assert caught.value.line == 4


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(TooDeep):
        parse_xml(b"<a>" * 10_000 + b"</a>" * 10_000)
    nested = b"<r>\n" + b"<a>" * 130 + b"</a>" * 130 + b"</r>"
    with pytest.raises(TooDeep) as caught:
        parse_xml(nested)
    assert caught.value.line == 2
    parse_xml(nested, limits=ParseLimits(max_depth=200))


def test_element_count_limit() -> None:
    data = b"<r>" + b"<a/>" * 500 + b"</r>"
    with pytest.raises(TooManyElements) as caught:
        parse_xml(data, limits=ParseLimits(max_elements=100))
    assert caught.value.count == 501
    assert len(parse_xml(data).getroot()) == 500


def test_acceptable_documents_parse() -> None:
    assert parse_xml('<?xml version="1.0" encoding="UTF-16"?><r>Grüße</r>'.encode("utf-16")
                     ).getroot().text == "Grüße"
    assert parse_xml('<?xml version="1.0" encoding="ISO-8859-1"?><r>Grüße</r>'.encode("latin-1")
                     ).getroot().text == "Grüße"
    tree = parse_xml(b'\xef\xbb\xbf<?xml version="1.0"?><!-- c --><?xml-stylesheet href="x"?><r/>')
    assert tree.getroot().tag == "r"


def test_empty_and_non_bytes_input() -> None:
    with pytest.raises(Malformed):
        parse_xml(b"  \n")
    with pytest.raises(TypeError):
        parse_xml("<r/>")  # type: ignore[arg-type]
