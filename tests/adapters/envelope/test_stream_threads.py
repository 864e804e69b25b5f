"""The attachment pipeline (read, hash, AES-GCM, write in threads) and the one-pass ``save``:
same envelope format, every chunk still checked, errors from any stage surface as the typed
error and leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.envelope import (
    Attachment,
    Keystore,
    RoutingLabel,
    Tampered,
    Truncated,
    _stream,
    open_envelope,
    open_label,
    peek_envelope,
    seal,
)
from adapters.envelope._jose import compact_length, encrypt_compact, sign_compact
from adapters.envelope._stream import (
    AttachmentChanged,
    attachment_key,
    decrypt_stream,
    seal_chunks,
    sealed_size,
)

from .conftest import NOW

MESSAGE = b"<nachricht><inhalt>" + b"Bauantrag " * 500 + b"</inhalt></nachricht>"
PAIRS = [
    pytest.param("hospital", "gp", id="modern"),
    pytest.param("portal", "behoerde", id="fitconnect"),
]


def records(data: bytes) -> list[tuple[bytes, int, int]]:
    out, pos = [], 9
    while pos < len(data):
        kind, length = data[pos : pos + 1], int.from_bytes(data[pos + 1 : pos + 9], "big")
        out.append((kind, pos + 9, length))
        pos += 9 + length
    return out


@pytest.fixture
def no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert {t for t in threading.enumerate() if t not in before and t.is_alive()} == set()


@pytest.mark.parametrize(("sender", "recipient"), PAIRS)
@pytest.mark.parametrize("payload", [0, 1, 2, 3, 20_000], ids=lambda n: f"payload{n}")
def test_compact_length_is_the_serialized_length(
    stores: dict[str, Keystore], sender: str, recipient: str, payload: int
) -> None:
    sig_info, sign_key = stores[sender].signer(sender, NOW)
    enc_info, encrypt_key = stores[sender].encrypter(recipient, NOW)
    jws_header = {"alg": sig_info.alg, "kid": sig_info.kid, "kcbus": {"name": "Größe"}}
    jwe_header = {"alg": enc_info.alg, "enc": "A256GCM", "kid": enc_info.kid}
    token = encrypt_compact(
        jwe_header, sign_compact(jws_header, b"x" * payload, sign_key), encrypt_key
    )
    assert compact_length(jws_header, payload, sign_key, jwe_header, encrypt_key) == len(token)


@pytest.mark.parametrize(("sender", "recipient"), PAIRS)
@pytest.mark.parametrize("labelled", [False, True], ids=["plain", "end-to-end"])
def test_one_pass_save_has_the_in_order_layout(
    stores: dict[str, Keystore], sender: str, recipient: str, labelled: bool, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.tif"
    plan.write_bytes(os.urandom(9 * 1024 * 1024 + 12345))  # several pipeline groups, short tail
    via, label = ("bus", RoutingLabel(message_id="m-1")) if labelled else (None, None)

    def sealed() -> object:
        return seal(
            MESSAGE,
            sender=sender,
            recipient=recipient,
            keystore=stores[sender],
            now=NOW,
            attachments=[plan, Attachment(plan, name="copy.tif")],
            via=via,
            label=label,
        )

    one_pass, in_order = tmp_path / "one-pass.kcb", tmp_path / "in-order.kcb"
    first = sealed()
    assert first.save(one_pass) == first.size == one_pass.stat().st_size  # type: ignore[attr-defined]
    second = sealed()
    with open(in_order, "wb") as out:
        assert second.write_to(out) == second.size  # type: ignore[attr-defined]
    data = one_pass.read_bytes()
    assert [(k, n) for k, _, n in records(data)] == [
        (k, n) for k, _, n in records(in_order.read_bytes())
    ]
    digest = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert [e.sha256 for e in first.manifest] == [digest, digest]  # type: ignore[attr-defined]
    if labelled:
        seen = open_label(data, keystore=stores["bus"], now=NOW, replay_guard=None)
        assert seen.attachment_count == 2
    for name, envelope in (("a", one_pass), ("b", in_order)):
        opened = open_envelope(
            envelope,
            keystore=stores[recipient],
            now=NOW,
            replay_guard=None,
            attachments_dir=tmp_path / name,
        )
        assert opened.message == MESSAGE
        assert [hashlib.sha256(a.path.read_bytes()).hexdigest() for a in opened.attachments] == [
            digest,
            digest,
        ]


def test_save_reads_each_attachment_once(
    stores: dict[str, Keystore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "plan.tif"
    plan.write_bytes(os.urandom(100_000))
    sealed = seal(
        MESSAGE,
        sender="hospital",
        recipient="gp",
        keystore=stores["hospital"],
        now=NOW,
        attachments=[plan],
        chunk_size=4096,
    )

    def no_second_pass(*args: object, **kwargs: object) -> object:
        raise AssertionError("save hashed the attachment in a pass of its own")

    monkeypatch.setattr(hashlib, "file_digest", no_second_pass)
    sealed.save(tmp_path / "envelope.kcb")
    opened = open_envelope(
        tmp_path / "envelope.kcb",
        keystore=stores["gp"],
        now=NOW,
        replay_guard=None,
        attachments_dir=tmp_path / "out",
    )
    assert opened.attachments[0].path.read_bytes() == plan.read_bytes()


def test_an_attachment_that_changes_size_fails_the_save_and_leaves_nothing(
    stores: dict[str, Keystore], tmp_path: Path, no_stray_threads: None
) -> None:
    plan = tmp_path / "plan.tif"
    plan.write_bytes(os.urandom(6 * 1024 * 1024))
    sealed = seal(
        MESSAGE,
        sender="hospital",
        recipient="gp",
        keystore=stores["hospital"],
        now=NOW,
        attachments=[plan],
    )
    with open(plan, "ab") as grow:
        grow.write(b"more")
    with pytest.raises(AttachmentChanged):
        sealed.save(tmp_path / "envelope.kcb")
    plan.write_bytes(os.urandom(5 * 1024 * 1024))  # shorter
    with pytest.raises(AttachmentChanged):
        sealed.save(tmp_path / "envelope.kcb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.tif"]


@pytest.mark.parametrize("depth", [1, 2, 3], ids=lambda d: f"ring{d}")
@pytest.mark.parametrize("chunk", [1024, 1000 * 1024, 5 * 1024 * 1024])
@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 9 * 1024 * 1024 + 7])
def test_pipeline_round_trips_any_size_and_chunk(
    size: int,
    chunk: int,
    depth: int,
    tmp_path: Path,
    no_stray_threads: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ring depth 1 and 2 are what huge signed chunk sizes get
    monkeypatch.setattr(_stream, "_ring_depth", lambda _: depth)
    source = tmp_path / "plain"
    source.write_bytes(os.urandom(size))
    key = attachment_key(os.urandom(32), "envelope-1", 0)
    sealed, digest = bytearray(), hashlib.sha256()
    with open(source, "rb", buffering=0) as handle:
        seal_chunks(handle, size, key, chunk, 0, sealed.extend, digest)
    assert len(sealed) == sealed_size(size, chunk)
    assert digest.hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    plain = bytearray()
    with open(tmp_path / "sealed", "wb+") as stream:
        stream.write(sealed)
        stream.seek(0)
        got = decrypt_stream(stream, size, key, chunk, 0, plain.extend, envelope_id="e")
    assert bytes(plain) == source.read_bytes() and got == digest.hexdigest()


def _sealed_chunks(size: int, chunk: int) -> tuple[bytes, bytes, bytes]:
    plain = os.urandom(size)
    key = attachment_key(os.urandom(32), "envelope-1", 0)
    sealed = bytearray()
    seal_chunks(io.BytesIO(plain), size, key, chunk, 0, sealed.extend)
    return plain, key, bytes(sealed)


@pytest.mark.parametrize("bad_chunk", [0, 5, 4095, 4096, 9999])
def test_a_bad_chunk_in_any_group_is_named_and_nothing_after_it_is_written(
    bad_chunk: int, no_stray_threads: None
) -> None:
    chunk, count = 1024, 10_000  # 4096 chunks per pipeline group
    _, key, sealed = _sealed_chunks(chunk * count, chunk)
    offset = bad_chunk * (chunk + 16) + 3
    tampered = sealed[:offset] + bytes([sealed[offset] ^ 1]) + sealed[offset + 1 :]
    written = bytearray()
    with pytest.raises(Tampered) as caught:
        decrypt_stream(
            io.BytesIO(tampered), chunk * count, key, chunk, 0, written.extend, envelope_id="e"
        )
    assert caught.value.chunk == bad_chunk
    assert len(written) <= bad_chunk * chunk  # only chunks before the bad one, all verified


@pytest.mark.parametrize("cut", [1, 17, 1040, 4096 * 1040 + 5])
def test_truncation_inside_a_group_names_the_first_short_chunk(
    cut: int, no_stray_threads: None
) -> None:
    chunk, count = 1024, 10_000
    _, key, sealed = _sealed_chunks(chunk * count, chunk)
    kept = len(sealed) - cut
    with pytest.raises(Truncated) as caught:
        decrypt_stream(
            io.BytesIO(sealed[:kept]), chunk * count, key, chunk, 0, lambda _: None, envelope_id="e"
        )
    assert caught.value.chunk == kept // (chunk + 16)


def test_a_failing_write_surfaces_and_stops_every_thread(
    tmp_path: Path, no_stray_threads: None
) -> None:
    size, chunk = 20 * 1024 * 1024, 1024 * 1024
    plain, key, sealed = _sealed_chunks(size, chunk)
    calls = []

    def disk_full(view: memoryview) -> None:
        calls.append(len(view))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        seal_chunks(io.BytesIO(plain), size, key, chunk, 0, disk_full, hashlib.sha256())
    with pytest.raises(OSError, match="No space"):
        calls.clear()
        decrypt_stream(io.BytesIO(sealed), size, key, chunk, 0, disk_full, envelope_id="e")


def test_huge_signed_chunks_keep_the_rings_small() -> None:
    for chunk in (1 << 20, 16 << 20, 32 << 20, 64 << 20):
        group = _stream._groups(chunk * 8, chunk)[0].plain
        assert 2 * _stream._ring_depth(group) * (group + 16) <= 130 << 20


def test_every_write_after_the_first_encrypts_attachments_under_a_new_key(
    stores: dict[str, Keystore], tmp_path: Path
) -> None:
    """Chunk keys and nonces follow from the attachment key: if a second write of the same
    envelope met a changed file under the same key, GCM would leak the XOR of both plans."""
    plan = tmp_path / "plan.tif"
    plan.write_bytes(b"A" * 50_000)
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, attachments=[plan], chunk_size=4096)
    sealed.save(tmp_path / "first.kcb")
    plan.write_bytes(b"B" * 50_000)  # same size, other content
    second = sealed.data()
    first = (tmp_path / "first.kcb").read_bytes()
    [(_, at_first, length)] = [r for r in records(first) if r[0] == b"A"]
    [(_, at_second, _)] = [r for r in records(second) if r[0] == b"A"]
    xor = bytes(a ^ b for a, b in zip(first[at_first : at_first + length],
                                      second[at_second : at_second + length], strict=True))
    assert xor[:4096].count(ord("A") ^ ord("B")) < 100  # not the plaintexts' XOR
    for name, data in (("first", first), ("second", second)):
        opened = open_envelope(data, keystore=stores["gp"], now=NOW, replay_guard=None,
                               attachments_dir=tmp_path / name)
        assert opened.envelope_id == sealed.envelope_id
        expected = b"A" * 50_000 if name == "first" else b"B" * 50_000
        assert opened.attachments[0].path.read_bytes() == expected


def test_a_compact_envelope_read_from_a_file_allocates_its_size_not_the_limit(
    stores: dict[str, Keystore], tmp_path: Path
) -> None:
    import tracemalloc

    path = tmp_path / "small.jwe"
    seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
         now=NOW).save(path)
    tracemalloc.start()
    try:
        with open(path, "rb") as stream:
            info = peek_envelope(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.envelope_id is not None
    assert peak < 16 * 2**20  # reading up to the 512 MiB token limit must not reserve it


def test_two_streams_of_one_envelope_each_keep_their_own_key(
    stores: dict[str, Keystore], tmp_path: Path
) -> None:
    """A second stream started while the first is half read must not swap the first's
    attachment key (its chunks would no longer open — or share the second's nonces)."""
    plans = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for plan in plans:
        plan.write_bytes(os.urandom(3 * 2**20))
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, attachments=plans, chunk_size=64 * 1024)
    first = sealed.open()
    head = first.read(2**20)
    second = sealed.open().read()
    whole_first = head + first.read()
    attachment = [
        data[at : at + length]
        for data in (whole_first, second)
        for kind, at, length in records(data)
        if kind == b"A"
    ]
    assert attachment[0] != attachment[2] and attachment[1] != attachment[3]
    for name, data in (("first", whole_first), ("second", second)):
        opened = open_envelope(data, keystore=stores["gp"], now=NOW, replay_guard=None,
                               attachments_dir=tmp_path / name)
        assert [a.path.read_bytes() for a in opened.attachments] == [
            p.read_bytes() for p in plans]


def test_an_attachment_read_error_in_a_reader_lane_is_a_keystore_error(
    stores: dict[str, Keystore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from adapters.envelope import KeystoreError, _seal

    plan = tmp_path / "plan.tif"
    plan.write_bytes(os.urandom(2**20))
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, attachments=[plan], chunk_size=64 * 1024)

    class FailingDisk(io.FileIO):
        def readinto(self, buffer: object) -> int:  # type: ignore[override]
            raise OSError(errno.EIO, "Input/output error")

    import builtins

    def failing_open(path: object, *args: Any, **kwargs: Any) -> object:
        if path == plan:
            return FailingDisk(plan)
        return builtins.open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(_seal, "open", failing_open, raising=False)
    for write in (lambda: sealed.save(tmp_path / "e.kcb"), sealed.data):
        with pytest.raises(KeystoreError, match="unreadable"):
            write()
    assert not (tmp_path / "e.kcb").exists()
