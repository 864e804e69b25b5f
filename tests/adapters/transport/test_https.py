"""https:// with mutual TLS: faults of the peer lose nothing and double nothing; the client
certificate must belong to the envelope's sender; limits, back-pressure, OpenAPI."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from adapters.envelope import Keystore, open_envelope, seal
from adapters.transport import (
    DeliveryRefused,
    Outbound,
    PeerBusy,
    Transport,
    TransportConfigError,
    TransportError,
    TransportUnavailable,
    connect,
)
from adapters.transport.https import HttpsOutbox
from adapters.transport.https_inbox import HttpsInbox
from tests.adapters.transport._faulty_proxy import FaultyProxy
from tests.adapters.transport.conftest import SENDER, fake_envelope, fake_sender_of
from tests.servers.pki import TestPKI, make_pki

pytestmark = pytest.mark.real

BODY = fake_envelope(b"<xbau:baugenehmigung.antrag.0200/>" * 2000)  # ~70 KB


class Inbox:
    def __init__(self, pki: TestPKI, spool: Path, **options: object) -> None:
        self.pki, self.spool = pki, spool
        transport = connect("https://127.0.0.1:0/kcbus", listen=True,
                            cert_file=str(pki.server_cert), key_file=str(pki.server_key),
                            client_ca=str(pki.ca_cert), spool_dir=str(spool), **options)
        assert isinstance(transport, HttpsInbox)
        self.transport = transport
        self.url = transport.url

    def outbox(self, partner: str = SENDER, *, url: str | None = None,
               **options: object) -> HttpsOutbox:
        client = self.pki.client(partner)
        transport = connect(url or self.url, cert_file=str(client.cert),
                            key_file=str(client.key), ca_file=str(self.pki.ca_cert), **options)
        assert isinstance(transport, HttpsOutbox)
        return transport

    def stored(self) -> list[str | None]:
        got = self.transport.receive(100)
        for delivery in got:
            self.transport.acknowledge(delivery)
        return [d.envelope_id for d in got]

    def holds_an_envelope(self) -> bool:
        """Whether a delivery is published in the spool (without taking it out)."""
        return any(p.is_file() for p in self.spool.iterdir())

    def leftovers(self) -> list[Path]:
        return list((self.spool / ".tmp").iterdir())


@pytest.fixture
def inbox(https_pki: TestPKI, tmp_path: Path) -> Iterator[Inbox]:
    made = Inbox(https_pki, tmp_path / "spool", sender_of=fake_sender_of)
    yield made
    made.transport.close()


def test_peer_answering_500_then_retry_stores_it_once(https_pki: TestPKI,
                                                      tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky_backlog() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("ledger connection lost")  # the inbox answers 500
        return 0

    inbox = Inbox(https_pki, tmp_path / "spool", sender_of=fake_sender_of,
                  backlog=flaky_backlog)
    try:
        with inbox.outbox() as outbox:
            with pytest.raises(TransportUnavailable, match="HTTP 500"):
                outbox.send(Outbound("env-500", "bus", data=BODY))
            outbox.send(Outbound("env-500", "bus", data=BODY))  # the runtime's retry
        assert inbox.stored() == ["env-500"]
    finally:
        inbox.transport.close()


@pytest.mark.parametrize("fault", ["drop", "hold"])
def test_lost_answer_then_retry_gets_the_same_receipt_and_one_copy(
        inbox: Inbox, fault: str) -> None:
    assert inbox.transport.server is not None
    with FaultyProxy(inbox.transport.server.port) as proxy, \
            inbox.outbox(url=f"https://127.0.0.1:{proxy.port}/kcbus",
                         read_timeout=1.0) as outbox:
        # the fault hits the answer, which only comes once the envelope is on disk
        proxy.fail_next(fault, after_bytes=len(BODY),  # type: ignore[arg-type]
                        answer_when=inbox.holds_an_envelope)
        with pytest.raises(TransportUnavailable):
            outbox.send(Outbound("env-lost", "bus", data=BODY))
        assert proxy.faults_done == [fault]  # the inbox did get the whole request
        outbox.send(Outbound("env-lost", "bus", data=BODY))
        receipt = outbox.last_receipt
    with inbox.outbox() as direct:
        direct.send(Outbound("env-lost", "bus", data=BODY))
        assert direct.last_receipt == receipt
    assert inbox.stored() == ["env-lost"]
    assert inbox.leftovers() == []


def test_peer_closing_the_connection_mid_body_stores_nothing(inbox: Inbox) -> None:
    assert inbox.transport.server is not None
    with FaultyProxy(inbox.transport.server.port) as proxy, \
            inbox.outbox(url=f"https://127.0.0.1:{proxy.port}/kcbus") as outbox:
        proxy.fail_next("cut", after_bytes=64 << 10)  # while the body is on its way
        big = fake_envelope(b"x" * (4 << 20))
        with pytest.raises(TransportUnavailable):
            outbox.send(Outbound("env-cut", "bus", data=big))
        assert proxy.faults_done == ["cut"]
    assert inbox.stored() == []
    with inbox.outbox() as outbox:
        outbox.send(Outbound("env-cut", "bus", data=big))
    assert inbox.stored() == ["env-cut"]


def test_client_certificate_of_another_partner_is_rejected(inbox: Inbox) -> None:
    with inbox.outbox("gemeinde-b") as impostor, pytest.raises(DeliveryRefused) as info:
        impostor.send(Outbound("env-x", "bus", data=fake_envelope(b"x", sender=SENDER)))
    assert (info.value.status, info.value.peer_reason) == (403, "sender-mismatch")
    assert inbox.stored() == [] and inbox.leftovers() == []


def test_certificate_from_a_foreign_ca_never_gets_in(inbox: Inbox, tmp_path: Path) -> None:
    foreign = make_pki(tmp_path / "foreign").client(SENDER)
    outbox = connect(inbox.url, cert_file=str(foreign.cert), key_file=str(foreign.key),
                     ca_file=str(inbox.pki.ca_cert))
    with outbox, pytest.raises(TransportError):
        outbox.send(Outbound("env-x", "bus", data=BODY))
    assert inbox.stored() == []


def test_server_certificate_from_a_foreign_ca_is_not_trusted(inbox: Inbox,
                                                             tmp_path: Path) -> None:
    foreign = make_pki(tmp_path / "foreign")
    client = inbox.pki.client(SENDER)
    outbox = connect(inbox.url, cert_file=str(client.cert), key_file=str(client.key),
                     ca_file=str(foreign.ca_cert))
    with outbox, pytest.raises(TransportConfigError, match="not trusted"):
        outbox.send(Outbound("env-x", "bus", data=BODY))


def test_too_large_is_refused_before_the_body_is_read(https_pki: TestPKI,
                                                      tmp_path: Path) -> None:
    inbox = Inbox(https_pki, tmp_path / "spool", sender_of=fake_sender_of, max_size=1000)
    try:
        with inbox.outbox() as outbox, pytest.raises(DeliveryRefused) as info:
            outbox.send(Outbound("env-big", "bus", data=BODY))
        assert (info.value.status, info.value.peer_reason) == (413, "too-large")
        assert inbox.stored() == []
    finally:
        inbox.transport.close()


def test_backlog_answers_429_with_retry_after(https_pki: TestPKI, tmp_path: Path) -> None:
    pending = {"n": 50_000}
    inbox = Inbox(https_pki, tmp_path / "spool", sender_of=fake_sender_of,
                  backlog=lambda: pending["n"], max_backlog=10_000, retry_after=7)
    try:
        with inbox.outbox() as outbox:
            with pytest.raises(PeerBusy) as info:
                outbox.send(Outbound("env-1", "bus", data=BODY))
            assert (info.value.status, info.value.retry_after) == (429, 7.0)
            pending["n"] = 3
            outbox.send(Outbound("env-1", "bus", data=BODY))
        assert inbox.stored() == ["env-1"]
    finally:
        inbox.transport.close()


def _client(pki: TestPKI, partner: str = SENDER) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    cert = pki.client(partner)
    context.load_cert_chain(cert.cert, cert.key)
    return httpx.Client(verify=context)


def test_openapi_description_is_served(inbox: Inbox) -> None:
    with _client(inbox.pki) as client:
        document = client.get(f"{inbox.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/envelopes"]["post"]
    assert {p["name"] for p in post["parameters"]} == {"Idempotency-Key", "Content-Length"}
    assert {"202", "403", "413", "429"} <= set(post["responses"])
    assert document["components"]["securitySchemes"]["partnerCertificate"]["type"] == \
        "mutualTLS"


def test_requests_without_idempotency_key_or_length_are_refused(inbox: Inbox) -> None:
    with _client(inbox.pki) as client:
        no_key = client.post(f"{inbox.url}/envelopes", content=BODY)
        no_length = client.post(f"{inbox.url}/envelopes", content=iter([BODY]),
                                headers={"Idempotency-Key": "env-1"})
    assert (no_key.status_code, no_key.json()["reason_code"]) == (400, "idempotency-key")
    assert no_key.headers["content-type"] == "application/problem+json"
    assert no_length.status_code == 411
    assert inbox.stored() == []


def test_receiving_and_sending_roles_are_separate(inbox: Inbox) -> None:
    with pytest.raises(TransportConfigError):
        inbox.transport.send(Outbound("e", "x", data=b"x"))
    with inbox.outbox() as outbox, pytest.raises(TransportConfigError):
        outbox.receive(1)


def test_real_sealed_envelope_sender_must_match_the_certificate(https_pki: TestPKI,
                                                                tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    stores = {name: Keystore(tmp_path / "keys" / name, "test passphrase")
              for name in ("bus", SENDER)}
    for name, store in stores.items():
        store.create_identity(name, "modern", now=now - timedelta(days=1))
    stores["bus"].import_public(SENDER, stores[SENDER].export_public(SENDER), now=now)
    stores[SENDER].import_public("bus", stores["bus"].export_public("bus"), now=now)

    def sender_of(stream: BinaryIO) -> str:
        opened = open_envelope(stream.read(), keystore=stores["bus"], now=now,
                                        replay_guard=None)
        return str(opened.sender)

    sealed = seal(b"<nachricht/>", sender=SENDER, recipient="bus",
                           keystore=stores[SENDER], now=now)
    inbox = Inbox(https_pki, tmp_path / "spool", sender_of=sender_of)
    try:
        outbox: Transport
        with inbox.outbox("gemeinde-b") as outbox, pytest.raises(DeliveryRefused):
            outbox.send(Outbound(sealed.envelope_id, "bus", data=sealed.data()))
        with inbox.outbox(SENDER) as outbox:
            outbox.send(Outbound(sealed.envelope_id, "bus", data=sealed.data()))
        [delivery] = inbox.transport.receive(1)
        assert (delivery.peer, delivery.envelope_id) == (SENDER, sealed.envelope_id)
        assert delivery.read() == sealed.data()
        inbox.transport.acknowledge(delivery)
    finally:
        inbox.transport.close()


def test_retry_of_a_stored_large_envelope_gets_its_receipt(inbox: Inbox) -> None:
    """The inbox answers a duplicate without storing its body again; it must still read what
    the client sends, or closing the socket on unread bytes resets the connection and the
    answer can be lost (the partner would retry forever). Through a proxy, as partners often
    are: the reset reaches the proxy before it has passed the answer on."""
    assert inbox.transport.server is not None
    big = fake_envelope(b"<xbau:baugenehmigung.antrag.0200/>" * 120_000)  # ~4 MB
    with FaultyProxy(inbox.transport.server.port) as proxy, \
            inbox.outbox(url=f"https://127.0.0.1:{proxy.port}/kcbus") as outbox:
        outbox.send(Outbound("env-big", "bus", data=big))
        first = outbox.last_receipt
        for _ in range(5):
            outbox.send(Outbound("env-big", "bus", data=big))
            assert outbox.last_receipt == first
    assert inbox.stored() == ["env-big"]


def _raw_post(inbox: Inbox, envelope_id: str, size: int) -> http.client.HTTPSConnection:
    """A POST with ``Expect: 100-continue`` whose headers are sent, its body not yet."""
    context = ssl.create_default_context(cafile=str(inbox.pki.ca_cert))
    cert = inbox.pki.client(SENDER)
    context.load_cert_chain(cert.cert, cert.key)
    assert inbox.transport.server is not None
    connection = http.client.HTTPSConnection("127.0.0.1", inbox.transport.server.port,
                                             context=context, timeout=10)
    connection.putrequest("POST", "/kcbus/envelopes")
    for name, value in (("Idempotency-Key", envelope_id), ("Content-Length", str(size)),
                        ("Expect", "100-continue")):
        connection.putheader(name, value)
    connection.endheaders()
    return connection


def test_a_duplicate_announced_with_expect_100_is_answered_before_its_body(
        inbox: Inbox) -> None:
    with inbox.outbox() as outbox:
        outbox.send(Outbound("env-once", "bus", data=BODY))
        receipt = outbox.last_receipt
    connection = _raw_post(inbox, "env-once", len(BODY))
    assert connection.sock is not None
    try:
        # read raw: http.client would skip a "100 Continue" (which asks for the body)
        answer = connection.sock.makefile("rb")
        assert answer.readline().startswith(b"HTTP/1.1 200 ")
        headers = dict(line.decode().split(": ", 1) for line in iter(answer.readline, b"\r\n"))
        body = answer.read(int(headers["Content-Length"].strip()))
        assert json.loads(body) == {"receipt_id": receipt, "envelope_id": "env-once",
                                    "size": len(BODY), "duplicate": True}
    finally:
        connection.close()
    assert inbox.stored() == ["env-once"]


def test_a_full_inbox_answers_503_with_retry_after(https_pki: TestPKI, tmp_path: Path) -> None:
    inbox = Inbox(https_pki, tmp_path / "spool", sender_of=fake_sender_of, max_connections=1)
    server = inbox.transport.server
    assert server is not None
    holder = _raw_post(inbox, "env-slow", len(BODY))  # holds the one slot, sends no body
    try:
        deadline = time.monotonic() + 10
        while server._slots._value and time.monotonic() < deadline:
            time.sleep(0.01)
        with inbox.outbox() as outbox, pytest.raises(PeerBusy) as info:
            outbox.send(Outbound("env-1", "bus", data=BODY))
        assert (info.value.status, info.value.retry_after) == (503, 5.0)
    finally:
        holder.close()
        inbox.transport.close()
