"""One endpoint per transport, twin or real server, for the shared scenario suite.

An :class:`Endpoint` opens senders and receivers that talk to the same mailbox. Twins run
in-process (``memory``, ``file``, ``kombu+memory``); the real ones use the servers of
``tests/servers`` (RabbitMQ, OpenSSH, an HTTPS inbox with mutual TLS).

The envelopes in these tests are opaque bytes in a trivial test format,
``FAKE-ENVELOPE sender=<partner>\\n<payload>``, so that the HTTPS inbox's ``sender_of`` hook has
something to read (the real envelope format is tested in ``test_https.py`` once available).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest
from kombu.connection import Connection

from adapters.transport import Transport, connect
from adapters.transport.memory import broker as broker_of
from tests.servers.pki import TestPKI
from tests.servers.rabbitmq import RabbitMQ
from tests.servers.sshd import SshServer

SENDER = "gemeinde-a"
BIG_SIZE = 200 * 1024 * 1024


def fake_envelope(payload: bytes, sender: str = SENDER) -> bytes:
    return f"FAKE-ENVELOPE sender={sender}\n".encode() + payload


def fake_sender_of(stream: BinaryIO) -> str:
    line = stream.readline(256)
    prefix = b"FAKE-ENVELOPE sender="
    if not line.startswith(prefix):
        from xoev import PartnerFault

        raise PartnerFault("not a test envelope")
    return line[len(prefix):].strip().decode()


@dataclass
class Endpoint:
    """``open_receiver(**options)`` takes extra transport options (e.g. ``max_bytes``);
    ``parked()`` lists what the transport parked as failed: the reason code where the
    transport keeps one, ``""`` where it does not (RabbitMQ's dead-letter queue)."""

    name: str
    recipient: str
    open_sender: Callable[[], Transport]
    open_receiver: Callable[..., Transport]
    real: bool
    parked: Callable[[], list[str]]
    folder: Path | None = None  # drop folder / spool on the local disk, where there is one
    cleanup: list[Callable[[], None]] = field(default_factory=list)


TWINS = ("memory", "file", "kombu+memory")
REAL = ("amqp", "sftp", "https")
ALL = [*TWINS, *(pytest.param(name, marks=pytest.mark.real) for name in REAL)]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _failed_folder(folder: Path) -> Callable[[], list[str]]:
    """Reason codes of the files a drop folder parked in ``.failed``."""
    def parked() -> list[str]:
        return sorted(p.read_text().strip() for p in (folder / ".failed").glob("*.reason"))
    return parked


def _dead_letters(kombu_url: str, queue: str) -> Callable[[], list[str]]:
    """One ``""`` per message in a dead-letter queue (counted with a passive declare)."""
    def parked() -> list[str]:
        with Connection(kombu_url) as conn:  # type: ignore[no-untyped-call]
            channel = conn.channel()
            _, count, _ = channel.queue_declare(queue=queue, passive=True)
            return [""] * int(count)
    return parked


def make_endpoint(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Endpoint:
    recipient = _unique("landratsamt")
    if name == "memory":
        name = _unique("scenario")
        url = f"memory://{name}"

        def dead() -> list[str]:
            return [reason for _, _, reason in broker_of(name).dead]

        return Endpoint(name, recipient, lambda: connect(url, peer=SENDER),
                        lambda **kw: connect(url, inbox=recipient, **kw), real=False,
                        parked=dead)
    if name == "file":
        url = f"file://{tmp_path / 'drop'}"
        return Endpoint(name, recipient, lambda: connect(url), lambda **kw: connect(url, **kw),
                        real=False, parked=_failed_folder(tmp_path / "drop"),
                        folder=tmp_path / "drop")
    if name in ("kombu+memory", "amqp"):
        claims = tmp_path / "claims"
        if name == "amqp":
            broker: RabbitMQ = request.getfixturevalue("rabbitmq")
            url = broker.url
        else:
            url = "kombu+memory://"
        exchange = _unique("kcbus")
        options = {"claim_check": str(claims), "exchange": exchange}
        dead_queue = f"{exchange}.{recipient}.dead"
        return Endpoint(name, recipient, lambda: connect(url, **options),
                        lambda **kw: connect(url, inbox=recipient, **options, **kw),
                        real=name == "amqp",
                        parked=_dead_letters(url if name == "amqp" else "memory://",
                                             dead_queue))
    if name == "sftp":
        server: SshServer = request.getfixturevalue("sftp_server")
        folder = server.root / _unique("drop")
        folder.mkdir()
        server.chown_to_user(folder)
        sftp_options = {"key_file": str(server.private_key),
                        "known_hosts": str(server.known_hosts), "poll_interval": 0.05}
        url = server.url(folder.name)
        return Endpoint(name, recipient, lambda: connect(url, **sftp_options),
                        lambda **kw: connect(url, **sftp_options, **kw), real=True,
                        parked=_failed_folder(folder), folder=folder)
    if name == "https":
        pki: TestPKI = request.getfixturevalue("https_pki")
        spool = tmp_path / "spool"
        inbox = connect("https://127.0.0.1:0/kcbus", listen=True,
                        cert_file=str(pki.server_cert), key_file=str(pki.server_key),
                        client_ca=str(pki.ca_cert), spool_dir=str(spool),
                        sender_of=fake_sender_of)
        client = pki.client(SENDER)
        inbox_url: str = inbox.url  # type: ignore[attr-defined]
        endpoint = Endpoint(
            name, recipient,
            lambda: connect(inbox_url, cert_file=str(client.cert), key_file=str(client.key),
                            ca_file=str(pki.ca_cert)),
            lambda **kw: connect(inbox_url, listen=True, serve=False, spool_dir=str(spool), **kw),
            real=True, parked=_failed_folder(spool), folder=spool)
        endpoint.cleanup.append(inbox.close)
        return endpoint
    raise AssertionError(name)


@pytest.fixture(params=ALL)
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Endpoint]:
    made = make_endpoint(request.param, request, tmp_path)
    yield made
    for step in made.cleanup:
        step()


@dataclass(frozen=True)
class BigFile:
    path: Path
    size: int
    sha256: str


@pytest.fixture(scope="session")
def big_envelope(tmp_path_factory: pytest.TempPathFactory) -> BigFile:
    """A 200 MB envelope (an XBau application with its plans), written once per session."""
    path = tmp_path_factory.mktemp("big") / "bauantrag-mit-plaenen.env"
    digest = hashlib.sha256()
    header = fake_envelope(b"")
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        out.write(header)
        digest.update(header)
        written = len(header)
        n = 0
        while written < BIG_SIZE:
            # vary each MiB so that a misplaced chunk cannot go unnoticed
            piece = n.to_bytes(8, "big") + block[8:min(len(block), BIG_SIZE - written)]
            piece = piece[:BIG_SIZE - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
            n += 1
    return BigFile(path, BIG_SIZE, digest.hexdigest())
