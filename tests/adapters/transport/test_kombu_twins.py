"""The AMQP adapter's embedded defaults: the same code on kombu's memory and folder brokers."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.transport import Outbound, TransportConfigError, connect
from adapters.transport.amqp import AmqpTransport, queue_name


def test_folder_broker_hands_unacknowledged_envelopes_to_the_next_worker(tmp_path: Path) -> None:
    url = f"kombu+filesystem://{tmp_path}"
    with connect(url) as sender:
        sender.send_many([Outbound(f"e{i}", "bus", data=b"x") for i in range(2)])
    first = connect(url, inbox="bus")
    got = first.receive(10, timeout=2)
    assert sorted(d.envelope_id or "" for d in got) == ["e0", "e1"]
    first.acknowledge(got[0])
    first.close()  # a worker process ends without acknowledging the second one
    with connect(url, inbox="bus") as second:
        [again] = second.receive(10, timeout=2)
        assert again.envelope_id == got[1].envelope_id
        second.reject(again, "unreadable")
        assert second.receive(10, timeout=0.2) == []
    # the in-process brokers know no dead-letter exchange: the adapter copies it there
    dead = list((tmp_path / "queue").glob(f"*{queue_name('bus')}.dead.msg"))
    assert len(dead) == 1


def test_kombu_scheme_urls_are_checked() -> None:
    with pytest.raises(TransportConfigError):
        connect("kombu+filesystem://relative/folder")
    transport = connect("kombu+memory://", prefetch=8)
    assert isinstance(transport, AmqpTransport) and transport.prefetch == 8
    transport.close()


def test_folder_broker_writes_nothing_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kombu keeps its exchange tables in "control/" relative to the working directory unless told
    # otherwise: a worker must not litter whatever folder it was started from.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    broker = tmp_path / "broker"
    # an exchange name of its own: kombu declares each exchange once per process
    with connect(f"kombu+filesystem://{broker}", exchange="cwdcheck") as sender:
        sender.send(Outbound("e1", "bus", data=b"x"))
    assert list(cwd.iterdir()) == []
    assert any((broker / "control").iterdir())
