"""The kombu queue trigger: fires while messages wait, consumes none, keeps the loop free."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from kombu import Connection, Exchange, Queue

from kcbus.airflow.triggers import (
    CredentialsInTrigger,
    DropFolderTrigger,
    FirePolicy,
    KombuQueueTrigger,
    count_ready,
)
from tests.servers.rabbitmq import RabbitMQ
from xoev import ConfigurationError


def _publish(url: str, queue: str, count: int = 1) -> None:
    target = Queue(queue, Exchange(queue, type="direct", durable=True), routing_key=queue)
    with Connection(url) as conn, conn.Producer() as producer:
        for i in range(count):
            producer.publish(
                {"n": i}, exchange=target.exchange, routing_key=queue, declare=[target],
                delivery_mode=2,
            )


def _ready(url: str, queue: str) -> int:
    with Connection(url) as conn:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)


async def _next_event(events: AsyncIterator[TriggerEvent], timeout: float = 10.0) -> TriggerEvent:
    return await asyncio.wait_for(anext(events), timeout)


def _rebuild(trigger: KombuQueueTrigger) -> KombuQueueTrigger:
    """What the triggerer does: import the classpath, call it with the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert isinstance(rebuilt, KombuQueueTrigger)
    return rebuilt


@pytest.fixture
def queue_name() -> str:
    return f"kcbus.test.{uuid.uuid4().hex[:8]}"


def test_fire_policy_fires_on_arrival_and_again_only_while_messages_linger() -> None:
    policy = FirePolicy(refire_interval=2.0)
    assert policy.observe(0, now=0.0) is False
    assert policy.observe(3, now=0.5) is True  # messages appeared: fire at once
    assert policy.observe(3, now=1.0) is False  # still the same backlog, a run is on it
    assert policy.observe(5, now=2.6) is True  # lingering past the refire interval
    assert policy.observe(0, now=3.0) is False  # drained
    assert policy.observe(1, now=3.1) is True  # new arrival fires immediately again


def _watches(trigger: KombuQueueTrigger | DropFolderTrigger) -> dict[str, object]:
    """Everything that decides what a trigger watches and how (its public attributes)."""
    return {k: v for k, v in vars(trigger).items() if not k.startswith("_")}


@pytest.mark.parametrize(
    "trigger",
    [
        KombuQueueTrigger(queues=["kcbus.in.klinikum", "kcbus.in.lra"], conn_id="kcbus_broker",
                          poll_interval=0.2, refire_interval=5.0, max_backoff=10.0),
        KombuQueueTrigger(queues=["kcbus.in.a"], broker_url="amqp://broker.internal:5672//"),
        KombuQueueTrigger(
            queues=["kcbus.in.a"], broker_url="filesystem://",
            transport_options={"data_folder_in": "/var/q", "data_folder_out": "/var/q"},
        ),
        DropFolderTrigger(folders=["/var/drop/in"], poll_interval=0.1, marker_suffix=".ok"),
    ],
    ids=["conn-id", "plain-url", "filesystem", "drop-folder"],
)
def test_serialize_round_trips_into_an_equal_trigger_watching_the_same_thing(
    trigger: KombuQueueTrigger | DropFolderTrigger,
) -> None:
    classpath, kwargs = trigger.serialize()
    assert classpath == f"kcbus.airflow.triggers.{type(trigger).__name__}"
    # What the triggerer does: import the classpath, call it with the kwargs.
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert type(rebuilt) is type(trigger)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert _watches(rebuilt) == _watches(trigger)
    # Every constructor argument survives (nothing falls back to a default on the way).
    assert set(kwargs) == set(inspect.signature(type(trigger)).parameters)


def test_serialized_kwargs_name_a_connection_not_its_credentials() -> None:
    trigger = KombuQueueTrigger(queues=["kcbus.in.klinikum"], conn_id="kcbus_broker")
    _, kwargs = trigger.serialize()
    assert kwargs["conn_id"] == "kcbus_broker"
    assert kwargs["broker_url"] is None


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ({"broker_url": "amqp://bus:s3cr3t@broker.internal:5672//"},
         "amqp://bus:***@broker.internal:5672//"),
        ({"broker_url": "amqps://broker.internal//?password=s3cr3t"},
         "amqps://broker.internal//?password=***"),
        ({"broker_url": "memory://", "transport_options": {"sasl_password": "s3cr3t"}},
         "'sasl_password'"),
        ({"broker_url": "memory://", "transport_options": {"ssl": {"keyfile_password": "s3cr3t"}}},
         "'keyfile_password'"),
        ({"broker_url": "amqps://s3cr3t@broker.internal//"}, "amqps://***@broker.internal//"),
    ],
)
def test_a_credential_given_to_the_trigger_is_refused_before_it_can_be_serialized(
    given: dict[str, Any], shown: str
) -> None:
    with pytest.raises(CredentialsInTrigger) as caught:
        KombuQueueTrigger(queues=["kcbus.in.a"], **given)
    assert isinstance(caught.value, ConfigurationError)
    assert "s3cr3t" not in str(caught.value)
    assert shown in str(caught.value) and "conn_id" in str(caught.value)


def test_needs_exactly_one_broker_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KombuQueueTrigger(queues=["q"])
    with pytest.raises(ValueError, match="exactly one"):
        KombuQueueTrigger(queues=["q"], broker_url="memory://", conn_id="c")


def test_asset_watcher_accepts_it_and_the_dag_serializes() -> None:
    from airflow.sdk import DAG, Asset, AssetWatcher
    from airflow.serialization.serialized_objects import DagSerialization

    trigger = KombuQueueTrigger(queues=["kcbus.in.x"], broker_url="memory://")
    asset = Asset(
        name="kcbus-test-inbound",
        uri="kcbus://test/inbound",
        watchers=[AssetWatcher(name="kcbus-test-watch", trigger=trigger)],
    )
    with DAG(dag_id="kcbus_trigger_serialization", schedule=[asset]) as dag:
        pass
    serialized = DagSerialization.to_dict(dag)
    text = str(serialized)
    assert "kcbus.airflow.triggers.KombuQueueTrigger" in text


def test_fires_on_pending_messages_in_memory_broker_without_consuming(queue_name: str) -> None:
    asyncio.run(_fires_without_consuming(queue_name))


async def _fires_without_consuming(queue_name: str) -> None:
    url = "memory://"
    trigger = _rebuild(
        KombuQueueTrigger(queues=[queue_name], broker_url=url, poll_interval=0.05)
    )
    events = trigger.run()
    try:
        waiting = asyncio.ensure_future(_next_event(events))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # an empty (not yet declared) queue fires nothing
        await asyncio.to_thread(_publish, url, queue_name, 3)
        event = await waiting
        assert event.payload == {"pending": 3, "queues": {queue_name: 3}}
        assert _ready(url, queue_name) == 3  # counted, not consumed
    finally:
        await events.aclose()


def test_broker_calls_never_block_the_event_loop(queue_name: str) -> None:
    asyncio.run(_loop_stays_free(queue_name))


async def _loop_stays_free(queue_name: str) -> None:
    # A TCP peer that accepts and never answers: the AMQP handshake hangs until its timeout.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    trigger = KombuQueueTrigger(
        queues=[queue_name], broker_url=f"amqp://127.0.0.1:{port}//", poll_interval=0.05
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    events = trigger.run()
    tick_task = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 1.0)
        # The loop kept running other coroutines the whole second the broker hung.
        assert ticks >= 30
    finally:
        tick_task.cancel()
        stop.set()
        acceptor.join()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.real
@pytest.mark.slow
def test_real_rabbitmq_fires_survives_a_restart_and_resolves_a_connection(
    rabbitmq: RabbitMQ, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Credentials come from an Airflow Connection, never from the trigger's kwargs.
    monkeypatch.setenv("AIRFLOW_CONN_KCBUS_TEST_BROKER", rabbitmq.url)
    asyncio.run(_real_rabbitmq(rabbitmq, queue_name))


async def _real_rabbitmq(rabbitmq: RabbitMQ, queue_name: str) -> None:
    url = rabbitmq.url
    trigger = _rebuild(
        KombuQueueTrigger(
            queues=[queue_name], conn_id="kcbus_test_broker", poll_interval=0.1,
            refire_interval=60.0, max_backoff=1.0,
        )
    )
    assert "guest" not in str(trigger.serialize())
    events = trigger.run()
    try:
        await asyncio.to_thread(_publish, url, queue_name, 2)
        first = await _next_event(events, timeout=15.0)
        assert first.payload["pending"] == 2
        assert await asyncio.to_thread(_ready, url, queue_name) == 2

        # Drain (as the DAG run would), restart the broker, then a new message arrives.
        def drain() -> None:
            with Connection(url) as conn:
                conn.default_channel.queue_purge(queue_name)

        await asyncio.to_thread(drain)
        waiting = asyncio.ensure_future(_next_event(events, timeout=120.0))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(rabbitmq.restart)
        assert not waiting.done()
        await asyncio.to_thread(_publish, url, queue_name, 1)
        second = await waiting
        assert second.payload["pending"] == 1
    finally:
        await events.aclose()


def test_count_ready_follows_the_drop_folder_rules(tmp_path: Path) -> None:
    folder = tmp_path / "von-klinikum"
    assert count_ready(str(folder)) == 0  # not created yet: nothing waits
    folder.mkdir()
    for name in ("a.env", "b.env", ".hidden", "c.env.part", "d.tmp", "e~"):
        (folder / name).write_bytes(b"x")
    for sub in (".tmp", ".claimed", ".done", ".failed"):
        (folder / sub).mkdir()
        (folder / sub / "z.env").write_bytes(b"x")
    assert count_ready(str(folder)) == 2
    (folder / "a.env.ok").write_bytes(b"")
    assert count_ready(str(folder), marker_suffix=".ok") == 1  # only a.env is marked complete


def test_drop_folder_trigger_fires_on_arrival_without_touching_the_files(tmp_path: Path) -> None:
    asyncio.run(_drop_folder(tmp_path))


async def _drop_folder(tmp_path: Path) -> None:
    from adapters.transport import Outbound, connect

    folder = tmp_path / "von-klinikum"
    watcher = _rebuild_folder(DropFolderTrigger(folders=[str(folder)], poll_interval=0.05))
    events = watcher.run()
    try:
        waiting = asyncio.ensure_future(_next_event(events))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # A partner publishes through the real file-drop adapter (temporary name, rename).
        with connect(f"file://{folder}") as drop:
            drop.send(Outbound(envelope_id="env-1", recipient="kcbus", data=b"sealed"))
        event = await waiting
        assert event.payload == {"pending": 1, "folders": {str(folder): 1}}
        with connect(f"file://{folder}") as inbox:
            assert [d.envelope_id for d in inbox.receive(10)] == ["env-1"]  # still there
    finally:
        await events.aclose()


def _rebuild_folder(trigger: DropFolderTrigger) -> DropFolderTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert isinstance(rebuilt, DropFolderTrigger)
    return rebuilt
