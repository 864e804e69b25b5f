"""The in-process twin keeps the delivery contract (the shared scenarios cover the rest)."""

from __future__ import annotations

import uuid

import pytest

from adapters.transport import EnvelopeTooLarge, Outbound, UnknownDelivery, connect
from adapters.transport.memory import broker


@pytest.fixture
def name() -> str:
    return f"mem-{uuid.uuid4().hex[:8]}"


def test_connections_to_the_same_name_share_queues(name: str) -> None:
    with connect(f"memory://{name}", peer="gemeinde-a") as sender, \
            connect(f"memory://{name}?inbox=landratsamt") as receiver:
        sender.send(Outbound("e-1", "landratsamt", data=b"sealed"))
        [delivery] = receiver.receive(10)
        assert (delivery.envelope_id, delivery.peer, delivery.read()) == (
            "e-1", "gemeinde-a", b"sealed")
        receiver.acknowledge(delivery)
    assert broker(name).pending() == 0


def test_inbox_filters_by_recipient_and_none_takes_all(name: str) -> None:
    with connect(f"memory://{name}") as bus:
        bus.send(Outbound("e-1", "a", data=b"1"))
        bus.send(Outbound("e-2", "b", data=b"2"))
        with connect(f"memory://{name}?inbox=b") as only_b:
            assert [d.envelope_id for d in only_b.receive(10)] == ["e-2"]
        assert [d.envelope_id for d in bus.receive(10)] == ["e-1", "e-2"]


def test_reject_parks_the_envelope_with_its_reason(name: str) -> None:
    with connect(f"memory://{name}") as bus:
        bus.send(Outbound("e-1", "a", data=b"1"))
        [delivery] = bus.receive(1)
        bus.reject(delivery, "unreadable")
        assert bus.receive(1) == []
    assert broker(name).dead == [("a", "e-1", "unreadable")]


def test_acknowledging_twice_is_a_programming_error(name: str) -> None:
    with connect(f"memory://{name}") as bus:
        bus.send(Outbound("e-1", "a", data=b"1"))
        [delivery] = bus.receive(1)
        bus.acknowledge(delivery)
        with pytest.raises(UnknownDelivery):
            bus.acknowledge(delivery)


def test_size_limit_mimics_a_broker(name: str) -> None:
    with connect(f"memory://{name}?max_size=4") as bus, pytest.raises(EnvelopeTooLarge) as info:
        bus.send(Outbound("e-1", "a", data=b"12345"))
    assert (info.value.size, info.value.limit) == (5, 4)


def test_send_is_idempotent_per_recipient_while_queued_or_in_flight(name: str) -> None:
    # send() looks envelope IDs up in an index (no scan of the queue); the index must follow
    # every move: queued → in flight → released → acknowledged.
    with connect(f"memory://{name}") as bus:
        for envelope in ("e-1", "e-2", "e-1"):
            bus.send(Outbound(envelope, "a", data=b"x"))
        bus.send(Outbound("e-1", "b", data=b"x"))  # another recipient: its own copy
        assert (broker(name).pending("a"), broker(name).pending("b")) == (2, 1)
        with connect(f"memory://{name}?inbox=a") as inbox:
            first, second = inbox.receive(10)
            bus.send(Outbound("e-1", "a", data=b"x"))  # in flight: still known
            assert broker(name).pending("a") == 0
            inbox.release(first)
            bus.send(Outbound("e-1", "a", data=b"x"))  # back in the queue: still known
            assert broker(name).pending("a") == 1
            [again] = inbox.receive(10)
            inbox.acknowledge(again)
            inbox.reject(second, "unreadable")
        # Acknowledged or dead-lettered: gone, so a new send is a new delivery.
        bus.send(Outbound("e-1", "a", data=b"x"))
        bus.send(Outbound("e-2", "a", data=b"x"))
        assert broker(name).pending("a") == 2
