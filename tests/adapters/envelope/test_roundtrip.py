"""Seal and open: both profiles, with and without attachments, end-to-end mode via the bus."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from adapters.envelope import (
    Attachment,
    InMemoryReplayGuard,
    Keystore,
    RoutingLabel,
    WrongRecipient,
    forward_content,
    open_envelope,
    open_label,
    peek_envelope,
    seal,
)

from .conftest import NOW

MESSAGE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<nachricht xmlns="urn:example:test">'
    + b"<text>Gr\xc3\xbc\xc3\x9fe aus dem Landratsamt</text>" * 400
    + b"</nachricht>\n"
)

PAIRS = [
    pytest.param("hospital", "gp", id="modern"),
    pytest.param("portal", "behoerde", id="fitconnect"),
    pytest.param("hospital", "behoerde", id="modern-to-fitconnect"),
]


@pytest.mark.parametrize(("sender", "recipient"), PAIRS)
def test_message_without_attachments_is_one_compact_jwe(
    stores: dict[str, Keystore], sender: str, recipient: str
) -> None:
    sealed = seal(MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender], now=NOW)
    data = sealed.data()

    assert sealed.is_compact and data.count(b".") == 4 and data.startswith(b"ey")
    assert MESSAGE[:40] not in data
    opened = open_envelope(data, keystore=stores[recipient], now=NOW,
                           replay_guard=InMemoryReplayGuard())
    assert opened.message == MESSAGE
    assert (opened.sender, opened.recipient) == (sender, recipient)
    assert opened.envelope_id == sealed.envelope_id
    assert opened.signing_kid == sealed.signing_kid
    assert opened.encryption_kid == sealed.encryption_kid
    assert opened.media_type == "application/xml"
    assert opened.created == NOW
    assert "Landratsamt" not in repr(opened)


@pytest.mark.parametrize(("sender", "recipient"), PAIRS)
def test_attachments_stream_through_one_container(
    stores: dict[str, Keystore], sender: str, recipient: str, tmp_path: Path
) -> None:
    plan = tmp_path / "lageplan.pdf"
    plan.write_bytes(os.urandom(3 * 4096 + 17))  # four chunks of 4 KiB, the last short
    exact = tmp_path / "grundriss.tif"
    exact.write_bytes(os.urandom(2 * 4096))  # exactly two chunks
    empty = tmp_path / "leer.txt"
    empty.write_bytes(b"")
    sealed = seal(
        MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender], now=NOW,
        attachments=[plan, Attachment(exact, name="plan-2.tif", media_type="image/tiff"), empty],
        chunk_size=4096,
    )
    envelope = tmp_path / "envelope.kcb"
    assert sealed.save(envelope) == sealed.size == envelope.stat().st_size
    assert [e.name for e in sealed.manifest] == ["lageplan.pdf", "plan-2.tif", "leer.txt"]

    out = tmp_path / "out"
    opened = open_envelope(envelope, keystore=stores[recipient], now=NOW,
                           replay_guard=InMemoryReplayGuard(), attachments_dir=out)

    assert opened.message == MESSAGE
    assert [a.path.read_bytes() for a in opened.attachments] == [
        plan.read_bytes(), exact.read_bytes(), b""
    ]
    assert [a.entry.media_type for a in opened.attachments] == [
        "application/pdf", "image/tiff", "text/plain"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["lageplan.pdf", "leer.txt", "plan-2.tif"]


def test_envelope_streams_from_open_and_opens_from_a_stream(
    stores: dict[str, Keystore], tmp_path: Path
) -> None:
    plan = tmp_path / "plan.bin"
    plan.write_bytes(os.urandom(100_000))
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, attachments=[plan], chunk_size=8192)
    with sealed.open() as stream:
        streamed = stream.read()
    assert len(streamed) == sealed.size

    class OneWay(io.RawIOBase):  # a non-seekable pipe, like a socket
        def __init__(self, data: bytes) -> None:
            self._data = memoryview(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            n = min(len(buffer), len(self._data), 1000)
            buffer[:n] = self._data[:n]
            self._data = self._data[n:]
            return n

    opened = open_envelope(io.BufferedReader(OneWay(streamed)), keystore=stores["gp"],
                           now=NOW, replay_guard=None, attachments_dir=tmp_path / "out")
    assert opened.attachments[0].path.read_bytes() == plan.read_bytes()


def test_peek_gives_the_envelope_id_without_keys(stores: dict[str, Keystore]) -> None:
    sealed = seal(MESSAGE, sender="portal", recipient="behoerde", keystore=stores["portal"],
                  now=NOW)
    info = peek_envelope(sealed.data())
    assert info.envelope_id == sealed.envelope_id
    assert info.recipient_kid == sealed.encryption_kid
    assert not info.container and not info.has_label


LABEL = RoutingLabel(
    message_id="6f1f3c4e-2b7a-4c1e-9d53-1b2c3d4e5f60",
    message_type="medizin.entlassbrief.0001",
    standard="HL7-CDA",
    version="R2",
    author="psw:krankenhaus-1",
    readers=("psw:praxis-7",),
)


@pytest.mark.parametrize("with_attachment", [False, True], ids=["plain", "attachment"])
def test_end_to_end_bus_routes_by_label_and_cannot_read_the_content(
    stores: dict[str, Keystore], tmp_path: Path, with_attachment: bool
) -> None:
    attachments = []
    if with_attachment:
        (tmp_path / "befund.pdf").write_bytes(os.urandom(50_000))
        attachments = [tmp_path / "befund.pdf"]
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, via="bus", label=LABEL, attachments=attachments, chunk_size=16384)
    envelope = tmp_path / "entlassbrief.kcb"
    sealed.save(envelope)

    bus_guard = InMemoryReplayGuard()
    label = open_label(envelope, keystore=stores["bus"], now=NOW, replay_guard=bus_guard)
    assert label.label == LABEL
    assert (label.sender, label.recipient, label.bus) == ("hospital", "gp", "bus")
    assert label.envelope_id == sealed.envelope_id
    assert label.attachment_count == len(attachments)

    # The bus holds no key for the content: it cannot open it.
    with pytest.raises(WrongRecipient):
        open_envelope(envelope, keystore=stores["bus"], now=NOW, replay_guard=None,
                      attachments_dir=tmp_path / "bus-out")
    assert not (tmp_path / "bus-out").exists() or not any((tmp_path / "bus-out").iterdir())

    forwarded = forward_content(envelope, label)
    assert forwarded.is_compact is (not with_attachment)
    data = forwarded.data()
    assert len(data) == forwarded.size
    with envelope.open("rb") as stream:  # the bus forwards from the ledger's stream
        from_stream = forward_content(stream, label)
        assert from_stream.data() == data
        assert from_stream.data() == data  # a transport may read it again
    opened = open_envelope(data, keystore=stores["gp"], now=NOW,
                           replay_guard=InMemoryReplayGuard(), attachments_dir=tmp_path / "gp")
    assert opened.message == MESSAGE
    assert (opened.sender, opened.recipient) == ("hospital", "gp")
    if with_attachment:
        assert opened.attachments[0].path.read_bytes() == attachments[0].read_bytes()


def test_final_recipient_may_open_a_labelled_envelope_directly(
    stores: dict[str, Keystore],
) -> None:
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, via="bus", label=LABEL)
    opened = open_envelope(sealed.data(), keystore=stores["gp"], now=NOW, replay_guard=None)
    assert opened.message == MESSAGE
