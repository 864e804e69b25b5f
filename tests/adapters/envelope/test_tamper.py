"""One byte changed anywhere in an envelope, and it does not open — with the error that names
the part. Attachments: every chunk, their order, truncation, swaps between attachments and
between envelopes; and opening never leaves partial plaintext on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.envelope import (
    EnvelopeRejected,
    InMemoryReplayGuard,
    Keystore,
    Malformed,
    RoutingLabel,
    Tampered,
    Truncated,
    open_envelope,
    open_label,
    seal,
)
from adapters.envelope._jose import b64d, b64e, encrypt_compact

from .conftest import NOW

MESSAGE = b"<nachricht><inhalt>" + b"Bauantrag " * 2000 + b"</inhalt></nachricht>"
CHUNK = 4096
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip_char(segment: str, index: int | None = None) -> str:
    """Replace one base64url character (by default the middle one) with another valid one."""
    i = len(segment) // 2 if index is None else index
    other = B64URL[(B64URL.index(segment[i]) + 1) % 64]
    return segment[:i] + other + segment[i + 1 :]


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def records(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, body offset, body length) of each record of a container."""
    out, pos = [], 9
    while pos < len(data):
        kind, length = data[pos : pos + 1], int.from_bytes(data[pos + 1 : pos + 9], "big")
        out.append((kind, pos + 9, length))
        pos += 9 + length
    return out


def assert_rejected(
    open_it: Callable[[], object], error: type[EnvelopeRejected], **attributes: object
) -> EnvelopeRejected:
    with pytest.raises(error) as caught:
        open_it()
    for name, value in attributes.items():
        assert getattr(caught.value, name) == value, (name, caught.value)
    assert "Bauantrag" not in str(caught.value)
    return caught.value


# --- compact JWE ---------------------------------------------------------------------------

JWE_PARTS = ["header", "encrypted key", "iv", "ciphertext", "tag"]


@pytest.mark.parametrize(("sender", "recipient"), [("hospital", "gp"), ("portal", "behoerde")],
                         ids=["modern", "fitconnect"])
@pytest.mark.parametrize("part", range(5), ids=JWE_PARTS)
def test_a_changed_jwe_part_is_tampered(
    stores: dict[str, Keystore], sender: str, recipient: str, part: int
) -> None:
    token = seal(MESSAGE, sender=sender, recipient=recipient, keystore=stores[sender],
                 now=NOW).data().decode()
    segments = token.split(".")
    index = None
    if part == 0:
        # Change a character inside the envelope ID: a change to "kid" would (rightly) read as
        # "not for us", a change to "alg" as an unsupported algorithm.
        header = b64d(segments[0].encode(), "x")
        index = (header.index(b'"id":"') + 10) * 4 // 3
    segments[part] = flip_char(segments[part], index)
    changed = ".".join(segments).encode()
    error = assert_rejected(
        lambda: open_envelope(changed, keystore=stores[recipient], now=NOW, replay_guard=None),
        Tampered,
    )
    assert error.part == "jwe"  # type: ignore[attr-defined]


def test_non_base64url_and_non_canonical_encodings_are_malformed(
    stores: dict[str, Keystore],
) -> None:
    token = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                 now=NOW).data().decode()
    segments = token.split(".")
    for bad in ("+", "/", "="):
        changed = list(segments)
        changed[3] = changed[3][:10] + bad + changed[3][11:]
        assert_rejected(lambda c=changed: open_envelope(  # type: ignore[misc]
            ".".join(c).encode(), keystore=stores["gp"], now=NOW, replay_guard=None), Malformed)
    # The 16-byte tag is 22 characters; its last one carries 4 unused bits that must be 0.
    tag = segments[4]
    changed = list(segments)
    changed[4] = tag[:-1] + B64URL[B64URL.index(tag[-1]) | 1]
    if changed[4] != tag:
        assert_rejected(lambda: open_envelope(
            ".".join(changed).encode(), keystore=stores["gp"], now=NOW, replay_guard=None),
            Malformed)


# --- the signature inside ------------------------------------------------------------------


def _reseal(stores: dict[str, Keystore], token: bytes, edit: Callable[[list[str]], None]) -> bytes:
    """Decrypt with the recipient's key, let ``edit`` change the JWS, encrypt it again the
    same way: only the signature check stands between the change and the recipient."""
    from adapters.envelope._jose import decrypt, parse_jwe

    jwe = parse_jwe(token)
    assert jwe.kid is not None
    found = stores["gp"].decrypter(jwe.kid)
    assert found is not None
    jws = decrypt(jwe, found[1]).decode().split(".")
    edit(jws)
    header = {k: v for k, v in jwe.header.items() if k != "epk"}
    _, public = stores["hospital"].encrypter("gp", NOW)
    return encrypt_compact(header, ".".join(jws).encode(), public)


def _edit_signed_header(jws: list[str]) -> None:
    header = json.loads(b64d(jws[0].encode(), "x"))
    header["kcbus"]["iat"] += 1
    jws[0] = b64e(json.dumps(header).encode()).decode()


@pytest.mark.parametrize(
    "edit",
    [
        _edit_signed_header,
        lambda jws: jws.__setitem__(1, flip_char(jws[1])),
        lambda jws: jws.__setitem__(2, flip_char(jws[2])),
    ],
    ids=["signed header", "payload", "signature"],
)
def test_a_changed_jws_part_fails_the_signature(
    stores: dict[str, Keystore], edit: Callable[[list[str]], None]
) -> None:
    token = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                 now=NOW).data()
    unchanged = _reseal(stores, token, lambda jws: None)
    assert open_envelope(unchanged, keystore=stores["gp"], now=NOW,
                         replay_guard=None).message == MESSAGE
    changed = _reseal(stores, token, edit)
    assert_rejected(
        lambda: open_envelope(changed, keystore=stores["gp"], now=NOW, replay_guard=None),
        Tampered, part="signature",
    )


# --- containers and attachment chunks ------------------------------------------------------


@pytest.fixture(params=["in-order", "one-pass"])
def container(
    stores: dict[str, Keystore], tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[bytes, list[Path]]:
    """An envelope with two attachments of 3 chunks each (the last one short), written in
    order (``data()``) or by ``save()`` (attachment records first, content filled in last)."""
    files = []
    for name in ("plan-a.pdf", "plan-b.pdf"):
        path = tmp_path / name
        path.write_bytes(os.urandom(2 * CHUNK + 100))
        files.append(path)
    sealed = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                  now=NOW, attachments=files, chunk_size=CHUNK)
    if request.param == "in-order":
        return sealed.data(), files
    sealed.save(tmp_path / "envelope.kcb")
    return (tmp_path / "envelope.kcb").read_bytes(), files


def _open(stores: dict[str, Keystore], data: bytes, out: Path) -> Callable[[], object]:
    return lambda: open_envelope(data, keystore=stores["gp"], now=NOW,
                                 replay_guard=InMemoryReplayGuard(), attachments_dir=out)


def test_container_opens_unchanged(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, files = container
    opened = open_envelope(data, keystore=stores["gp"], now=NOW, replay_guard=None,
                           attachments_dir=tmp_path / "out")
    assert [a.path.read_bytes() for a in opened.attachments] == [f.read_bytes() for f in files]


@pytest.mark.parametrize("attachment", [0, 1])
@pytest.mark.parametrize("chunk", [0, 1, 2])
@pytest.mark.parametrize("where", ["start", "tag"])
def test_every_chunk_is_authenticated(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path,
    attachment: int, chunk: int, where: str,
) -> None:
    data, _ = container
    _, start, _ = [r for r in records(data) if r[0] == b"A"][attachment]
    chunk_start = start + chunk * (CHUNK + 16)
    chunk_len = (CHUNK if chunk < 2 else 100) + 16
    offset = chunk_start if where == "start" else chunk_start + chunk_len - 1
    out = tmp_path / "out"
    assert_rejected(_open(stores, flip_byte(data, offset), out), Tampered,
                    part="attachment", attachment=attachment, chunk=chunk)
    assert not out.exists() or list(out.iterdir()) == []  # no partial plaintext left


def test_content_record_and_magic_are_checked(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, _ = container
    (_, start, length) = records(data)[0]
    assert_rejected(_open(stores, flip_byte(data, start + length // 2), tmp_path / "a"),
                    Tampered, part="jwe")
    assert_rejected(_open(stores, flip_byte(data, 1), tmp_path / "b"), Malformed,
                    part="container")


def test_reordered_chunks_are_detected(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, _ = container
    _, start, _ = next(r for r in records(data) if r[0] == b"A")
    size = CHUNK + 16
    first, second = data[start : start + size], data[start + size : start + 2 * size]
    swapped = data[:start] + second + first + data[start + 2 * size :]
    assert_rejected(_open(stores, swapped, tmp_path / "out"), Tampered,
                    part="attachment", attachment=0, chunk=0)


def test_swapped_attachments_are_detected(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, _ = container
    (_, a, length), (_, b, _) = [r for r in records(data) if r[0] == b"A"]
    swapped = data[:a] + data[b : b + length] + data[a + length : b] + data[a : a + length] + \
        data[b + length :]
    assert_rejected(_open(stores, swapped, tmp_path / "out"), Tampered,
                    part="attachment", attachment=0, chunk=0)


def test_chunks_from_another_envelope_are_detected(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, files = container
    other = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"],
                 now=NOW, attachments=files, chunk_size=CHUNK).data()
    _, start, length = next(r for r in records(data) if r[0] == b"A")
    _, other_start, _ = next(r for r in records(other) if r[0] == b"A")
    spliced = data[:start] + other[other_start : other_start + length] + data[start + length :]
    assert_rejected(_open(stores, spliced, tmp_path / "out"), Tampered,
                    part="attachment", attachment=0, chunk=0)


def test_truncation_anywhere_is_detected(
    stores: dict[str, Keystore], container: tuple[bytes, list[Path]], tmp_path: Path
) -> None:
    data, _ = container
    _, start, length = [r for r in records(data) if r[0] == b"A"][1]
    # cut inside the last chunk of the last attachment
    assert_rejected(_open(stores, data[: start + length - 50], tmp_path / "a"), Truncated,
                    part="attachment", attachment=1, chunk=2)
    # cut before the end record
    assert_rejected(_open(stores, data[:-9], tmp_path / "b"), Truncated, part="container")
    # cut off the whole last chunk and shorten the record to match
    cut = 100 + 16
    head = data[: start - 8] + (length - cut).to_bytes(8, "big")
    shortened = head + data[start : start + length - cut] + data[start + length :]
    assert_rejected(_open(stores, shortened, tmp_path / "c"), Tampered, part="container",
                    attachment=1)
    # anything after the end record
    assert_rejected(_open(stores, data + b"\x00", tmp_path / "d"), Malformed, part="container")
    for folder in "abcd":
        out = tmp_path / folder
        assert not out.exists() or list(out.iterdir()) == []


# --- routing labels ------------------------------------------------------------------------

LABEL = RoutingLabel(message_id="m-1", message_type="medizin.entlassbrief.0001")


def test_label_is_bound_to_its_content(stores: dict[str, Keystore]) -> None:
    one = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"], now=NOW,
               via="bus", label=LABEL).data()
    two = seal(MESSAGE, sender="hospital", recipient="gp", keystore=stores["hospital"], now=NOW,
               via="bus", label=LABEL).data()
    label_one, content_two = records(one)[0], records(two)[1]
    spliced = one[: label_one[1] + label_one[2]] + two[content_two[1] - 9 :]
    assert_rejected(
        lambda: open_label(spliced, keystore=stores["bus"], now=NOW, replay_guard=None),
        Tampered, part="label",
    )
    _, start, length = label_one
    assert_rejected(
        lambda: open_label(flip_byte(one, start + length // 2), keystore=stores["bus"],
                           now=NOW, replay_guard=None),
        Tampered, part="jwe",
    )
