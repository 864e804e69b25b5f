"""amqp:// on a real RabbitMQ: nothing lost or doubled across a broker restart; limits; DLX."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from kombu.connection import Connection

from adapters.transport import (
    AcknowledgeLost,
    EnvelopeTooLarge,
    Outbound,
    TransportConfigError,
    TransportUnavailable,
    connect,
)
from adapters.transport.amqp import AmqpTransport, queue_name
from tests.servers.rabbitmq import RabbitMQ

pytestmark = pytest.mark.real


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"kcbus-{tag}", f"gemeinde-{tag}"


# generous retry policy: a RabbitMQ restart takes ~10 s on this machine
_PATIENT = {"retries": 60, "retry_interval": 0.2, "retry_max_interval": 0.5}


def test_broker_restart_mid_stream_loses_nothing_and_ledger_sees_each_once(
        rabbitmq: RabbitMQ) -> None:
    exchange, partner = _names()
    ids = [f"env-{i:03d}" for i in range(300)]
    ledger: dict[str, bytes] = {}  # what the runtime stores, keyed by envelope id
    ack_lost = 0
    with connect(rabbitmq.url, exchange=exchange, **_PATIENT) as sender, \
            connect(rabbitmq.url, exchange=exchange, inbox=partner, prefetch=50,
                    **_PATIENT) as receiver:
        for envelope_id in ids[:100]:
            sender.send(Outbound(envelope_id, partner, data=envelope_id.encode()))
        held = receiver.receive(40, timeout=5)
        for delivery in held[:20]:
            ledger.setdefault(delivery.envelope_id or "", delivery.read())
            receiver.acknowledge(delivery)
        for delivery in held[20:]:  # stored in the ledger, acknowledgement not yet sent
            ledger.setdefault(delivery.envelope_id or "", delivery.read())

        restart = threading.Thread(target=rabbitmq.restart)
        restart.start()  # the broker goes down while the sender keeps publishing
        for envelope_id in ids[100:]:
            sender.send(Outbound(envelope_id, partner, data=envelope_id.encode()))
            if envelope_id == ids[150]:
                restart.join(120)  # the rest goes to the restarted broker
        restart.join(120)
        assert isinstance(sender, AmqpTransport)
        assert sender.connection_failures >= 1  # a publish really hit the outage

        for delivery in held[20:]:
            with pytest.raises(AcknowledgeLost):
                receiver.acknowledge(delivery)  # its channel died with the broker
            ack_lost += 1
        while batch := receiver.receive(100, timeout=3):
            for delivery in batch:
                envelope_id = delivery.envelope_id or ""
                assert delivery.read() == envelope_id.encode()
                if envelope_id in ledger:
                    assert delivery.redelivered or envelope_id in ids[100:]
                ledger.setdefault(envelope_id, delivery.read())
                receiver.acknowledge(delivery)
    assert sorted(ledger) == ids  # nothing lost, each stored exactly once
    assert ack_lost == 20


def test_envelopes_above_the_limit_need_a_claim_check(rabbitmq: RabbitMQ,
                                                      tmp_path: Path) -> None:
    exchange, partner = _names()
    big = b"p" * 2048
    with connect(rabbitmq.url, exchange=exchange, max_size=1024) as sender, \
            pytest.raises(EnvelopeTooLarge) as info:
        sender.send(Outbound("env-big", partner, data=big))
    assert (info.value.size, info.value.limit) == (2048, 1024)
    claims = tmp_path / "claims"
    with connect(rabbitmq.url, exchange=exchange, max_size=1024,
                 claim_check=str(claims)) as sender, \
            connect(rabbitmq.url, exchange=exchange, inbox=partner,
                    claim_check=str(claims)) as receiver:
        sender.send(Outbound("env-big", partner, data=big))
        [delivery] = receiver.receive(1, timeout=5)
        assert delivery.read() == big and delivery.size == 2048
        receiver.acknowledge(delivery)
    assert (claims / ".done" / "env-big.env").read_bytes() == big


def test_a_claim_check_file_swapped_for_a_symlink_is_never_followed(
        rabbitmq: RabbitMQ, tmp_path: Path) -> None:
    """Whoever can write the claim folder must not make the bus read another local file
    (a key, the process environment) into its ledger."""
    exchange, partner = _names()
    secret = tmp_path / "private.key"
    secret.write_bytes(b"PRIVATE KEY MATERIAL")
    claims = tmp_path / "claims"
    with connect(rabbitmq.url, exchange=exchange, max_size=1024,
                 claim_check=str(claims)) as sender, \
            connect(rabbitmq.url, exchange=exchange, inbox=partner,
                    claim_check=str(claims)) as receiver:
        sender.send(Outbound("env-swap", partner, data=b"p" * 2048))
        [claimed] = [p for p in claims.iterdir() if p.is_file()]
        claimed.unlink()
        claimed.symlink_to(secret)
        [delivery] = receiver.receive(1, timeout=5)
        with pytest.raises(OSError):
            delivery.read()
        receiver.reject(delivery, "unreadable-delivery")


def test_rejected_messages_land_in_the_partners_dead_letter_queue(rabbitmq: RabbitMQ) -> None:
    exchange, partner = _names()
    with connect(rabbitmq.url, exchange=exchange) as sender, \
            connect(rabbitmq.url, exchange=exchange, inbox=partner) as receiver:
        sender.send(Outbound("env-bad", partner, data=b"x"))
        [delivery] = receiver.receive(1, timeout=5)
        receiver.reject(delivery, "unreadable")
        assert receiver.receive(1, timeout=0.3) == []
    with Connection(rabbitmq.url) as conn:  # type: ignore[no-untyped-call]
        dead = conn.SimpleQueue(f"{queue_name(partner, exchange)}.dead")
        message = dead.get(timeout=5)
        assert message.properties["message_id"] == "env-bad"
        assert message.headers["x-death"][0]["reason"] == "rejected"  # RabbitMQ's DLX record
        message.ack()
        dead.close()


def test_the_broker_vouches_for_the_sender(rabbitmq: RabbitMQ) -> None:
    exchange, partner = _names()
    with connect(rabbitmq.url, exchange=exchange) as sender, \
            connect(rabbitmq.url, exchange=exchange, inbox=partner) as receiver:
        sender.send(Outbound("env-1", partner, data=b"x"))
        [delivery] = receiver.receive(1, timeout=5)
        assert delivery.peer == "guest"  # user_id validated by RabbitMQ against the login
        receiver.acknowledge(delivery)


def test_wrong_credentials_are_a_configuration_error(rabbitmq: RabbitMQ) -> None:
    url = rabbitmq.url.replace("guest:guest", "guest:wrong")
    with connect(url, retries=0) as sender, pytest.raises(TransportConfigError):
        sender.send(Outbound("env-1", "x", data=b"x"))


def test_an_unreachable_broker_is_recoverable() -> None:
    with connect("amqp://guest:guest@127.0.0.1:1//", retries=1, retry_interval=0.0) as sender, \
            pytest.raises(TransportUnavailable):
        sender.send(Outbound("env-1", "x", data=b"x"))


def test_receiving_needs_an_inbox(rabbitmq: RabbitMQ) -> None:
    with connect(rabbitmq.url) as transport, pytest.raises(TransportConfigError) as info:
        transport.receive(1)
    assert info.value.option == "inbox"
    assert isinstance(transport, AmqpTransport)
