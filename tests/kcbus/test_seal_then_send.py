"""Seal, commit, then send (``Bus.deliver_counts``), and the in-memory hand-off of sealed
envelopes between the two (``Runtime.keep_sealed``/``take_sealed``).

* A worker killed (``kill -9``) after the transport took an envelope but before the deliver
  unit committed: the next worker sends the *same* envelope again — same envelope ID, same
  bytes, as the ledger holds them — never a second, differently sealed one. The seal that
  happens in ``deliver_counts`` is an operator's resend (a fresh envelope ID by design), so
  the test goes through one.
* A seal whose unit rolled back stays in the worker's memory, but is never sent: the delivery
  is sealed again from the committed state, and what goes out is what the ledger holds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

import kcbus.bus
import kcbus.pipeline
from adapters.envelope import seal
from adapters.transport import Outbound, connect
from kcbus.config import load
from kcbus.ledger import DeliveryStatus, Kind, Ledger, MessageFilter, Status, StoredBlob
from kcbus.pipeline import StageCounts
from tests.kcbus.world import BUS, PROJECT, Keys, World, write_config, xbau_antrag


def _worker(config: Path, ledger: str, log: Path, *, die: bool) -> None:
    args = [
        sys.executable,
        "-m",
        "tests.kcbus.send_crash_worker",
        str(config),
        ledger,
        str(log),
        "lra",
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    if not die:
        done = subprocess.run(
            args, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "DONE" in done.stdout
        return
    proc = subprocess.Popen(
        [*args, "deliver-sent"],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "AT deliver-sent", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no rollback handlers
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sent(log: Path, recipient: str) -> list[tuple[str, str]]:
    """(envelope ID, SHA-256) of every send to ``recipient``, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [
        (eid, digest) for to, eid, digest in (line.split() for line in lines) if to == recipient
    ]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_kill_9_between_send_and_commit_resends_the_same_envelope(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = tmp_path / "drop"
    config_path = write_config(tmp_path, keys.root, broker="", folders=folders)
    config = load(config_path)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key_file = tmp_path / "ledger.keys"
    Ledger(ledger_url, keys=key_file).close()
    monkeypatch.setenv("KCBUS_LEDGER_KEYS", str(key_file))
    log = tmp_path / "sent.log"

    with connect(config.bus.inbound[0]) as inbox:
        for _ in range(2):
            sealed = seal(
                xbau_antrag(),
                sender="gemeinde-a",
                recipient=BUS,
                keystore=keys.stores["gemeinde-a"],
                now=datetime.now(UTC),
            )
            inbox.send(Outbound(sealed.envelope_id, BUS, data=sealed.data()))
    _worker(config_path, ledger_url, log, die=False)  # delivered once, acknowledged
    first = _sent(log, "lra")
    assert len({eid for eid, _ in first}) == 2

    with Ledger(ledger_url, keys=key_file) as ledger:
        refs = [m.ref for m in ledger.search(MessageFilter(kind=Kind.MESSAGE))]
        assert len(refs) == 2
        outcome = ledger.resend(refs, actor="oncall", reason="lra lost them", now=datetime.now(UTC))
        assert len(outcome.acted) == 2

    _worker(config_path, ledger_url, log, die=True)  # sealed + committed, sent, killed
    (crashed,) = _sent(log, "lra")[len(first) :]
    _worker(config_path, ledger_url, log, die=False)  # a fresh worker finishes

    again = _sent(log, "lra")[len(first) :]
    digests: dict[str, set[str]] = defaultdict(set)
    for eid, digest in again:
        digests[eid].add(digest)
    # One new envelope per message (the resend's), each always the same bytes; the one that
    # went out before the kill went out again unchanged — no second, different envelope.
    assert len(digests) == 2, again
    assert all(len(d) == 1 for d in digests.values()), again
    assert again.count(crashed) == 2
    assert not set(digests) & {eid for eid, _ in first}

    with Ledger(ledger_url, keys=key_file) as ledger:
        messages = ledger.search(MessageFilter(kind=Kind.MESSAGE))
        assert {m.status for m in messages} == {Status.ACKNOWLEDGED}
        with ledger.unit(actor="test", now=datetime.now(UTC)) as unit:
            stored = unit.blob_sources("sealed", {m.ledger_id for m in messages}, delivery_id=None)
        for message in messages:
            (delivery,) = ledger.history(message.ref).deliveries
            assert delivery.status is DeliveryStatus.DELIVERED
            assert delivery.envelope_id in digests  # the ledger names what went out...
            data = stored[delivery.id]
            assert not isinstance(data, StoredBlob)
            assert digests[delivery.envelope_id] == {_sha256(data)}  # ...and holds its bytes
    # The district office's drop holds exactly what was sent: 2 originals, 2 resends.
    files = {_sha256(p.read_bytes()) for p in (folders / "lra").glob("*.env")}
    assert files == {d for _, d in first} | {d for ds in digests.values() for d in ds}


class _RollsBack(Exception):
    pass


def test_a_seal_from_a_rolled_back_unit_is_never_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``process_pending`` routes and seals in one unit; it fails after ``seal_new`` kept the
    sealed envelopes in memory, and rolls back. The next pass routes and seals again (SQLite
    even hands out the same delivery IDs): what reaches the recipient is the committed seal."""
    rt = world.bus.runtime
    world.send("gemeinde-a", xbau_antrag())
    assert world.bus.receive_all() == 1

    real = kcbus.pipeline.seal_batch

    def fails_once(*args: object, **kwargs: object) -> StageCounts:
        monkeypatch.setattr(kcbus.bus, "seal_batch", real)
        raise _RollsBack

    monkeypatch.setattr(kcbus.bus, "seal_batch", fails_once)
    with pytest.raises(_RollsBack):
        world.bus.process_pending()
    stale = dict(rt._sealed)  # the hand-off under test
    assert stale, "seal_new kept nothing in memory: the test would prove nothing"
    assert world.bus.ledger.search(MessageFilter(status=(Status.ROUTED,))) == []

    counts = world.bus.process_pending()
    assert counts.routed == 1 and counts.sealed >= 1
    (message,) = world.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE))
    (delivery,) = world.bus.ledger.history(message.ref).deliveries
    assert delivery.status is DeliveryStatus.SEALED
    # The same delivery ID again, a different envelope: only the envelope ID tells them apart.
    assert delivery.id in {d for d, _ in stale}
    assert (delivery.id, delivery.envelope_id) not in stale
    with world.bus.ledger.unit(actor="test", now=world.now) as unit:
        committed = unit.blob_sources("sealed", {message.ledger_id}, delivery_id=None)
    ledger_bytes = committed[delivery.id]
    assert not isinstance(ledger_bytes, StoredBlob)

    assert world.bus.deliver_counts().sent >= 1
    inbox = world.inbox("lra")
    got = inbox.receive(10)
    assert [(d.envelope_id, d.read()) for d in got] == [(delivery.envelope_id, ledger_bytes)]
    stale_bytes = set(stale.values())
    assert all(d.read() not in stale_bytes for d in got)
