"""Crash safety: a worker process is killed with SIGKILL at every point of the pipeline in
turn — between the ledger commit and the transport acknowledgement, after each stage's
commit, and between handing an envelope to the recipient's transport and recording it — and a
fresh worker finishes the job. Every message arrives exactly once (the recipients are file
drops, so what arrived survives the kill), nothing is lost, no receipt is doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

import xoev
from adapters.envelope import open_envelope, seal
from adapters.transport import Outbound, connect
from kcbus.config import load
from kcbus.ledger import Kind, Ledger, MessageFilter, Status
from kcbus.receipts import NAMESPACE, read_receipt
from tests.kcbus.world import (
    BUS,
    PROJECT,
    Keys,
    write_config,
    xbau_antrag,
)

POINTS = [
    "receive-unacked", "received", "opened", "validated", "routed", "sealed",
    "deliver-sent", "delivered", "receipts-sealed", "receipts-delivered",
]


def _worker(config: Path, ledger: str, die_at: str | None) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    args = [sys.executable, "-m", "tests.kcbus.crash_worker", str(config), ledger]
    if die_at is None:
        done = subprocess.run(args, env=env, cwd=PROJECT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "DONE" in done.stdout
        return
    proc = subprocess.Popen([*args, die_at], env=env, cwd=PROJECT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"AT {die_at}", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no cleanup, no rollback handlers
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _opened(folder: Path, keystore: object) -> list[bytes]:
    out = []
    for path in sorted(folder.glob("*.env")):
        opened = open_envelope(path.read_bytes(), keystore=keystore, now=_now(),  # type: ignore[arg-type]
                               replay_guard=None)
        out.append(opened.message)
    return out


@pytest.mark.slow
def test_kill_9_at_every_stage_delivers_exactly_once(tmp_path: Path, keys: Keys) -> None:
    """One ledger, one worker after another: each gets fresh messages plus whatever its killed
    predecessor left, and is itself killed at the next point; a last worker finishes."""
    folders = tmp_path / "drop"
    config_path = write_config(tmp_path, keys.root, broker="", folders=folders)
    config = load(config_path)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key_file = tmp_path / "ledger.keys"
    Ledger(ledger_url, keys=key_file).close()

    valid: list[bytes] = []
    invalid = 0
    os.environ["KCBUS_LEDGER_KEYS"] = str(key_file)
    try:
        with connect(config.bus.inbound[0]) as inbox:
            for round_, die_at in enumerate([*POINTS, None]):
                batch = [xbau_antrag(), xbau_antrag()]
                valid += batch
                if round_ % 3 == 0:
                    batch.append(xbau_antrag(drop="xbau:referenzAntragsservice"))
                    invalid += 1
                for message in batch:
                    sealed = seal(message, sender="gemeinde-a", recipient=BUS,
                                  keystore=keys.stores["gemeinde-a"], now=_now())
                    inbox.send(Outbound(sealed.envelope_id, BUS, data=sealed.data()))
                _worker(config_path, ledger_url, die_at)
    finally:
        del os.environ["KCBUS_LEDGER_KEYS"]

    # The district office got each valid message exactly once, and nothing else.
    arrived = _opened(folders / "lra", keys.stores["lra"])
    assert sorted(arrived) == sorted(valid)
    # The municipality got one receipt of each kind per message, none twice.
    receipts = [
        read_receipt(m) for m in _opened(folders / "gemeinde-a", keys.stores["gemeinde-a"])
        if xoev.parse_xml(m).getroot().tag.startswith(f"{{{NAMESPACE}}}")
    ]
    kinds = Counter((r.reference.message_uuid, r.type.kind) for r in receipts)
    assert set(kinds.values()) == {1}
    assert sorted(Counter(kind for _, kind in kinds).items()) == [
        ("accepted", len(valid)), ("delivered", len(valid)), ("rejected", invalid),
    ]
    with Ledger(ledger_url, keys=key_file) as ledger:
        statuses = Counter(m.status for m in ledger.search(MessageFilter(kind=Kind.MESSAGE),
                                                            limit=1000))
        assert statuses == {Status.ACKNOWLEDGED: len(valid), Status.REJECTED: invalid}
        assert set(ledger.stats()) <= {"ACKNOWLEDGED", "REJECTED", "DELIVERED"}


def _now() -> datetime:  # envelopes are opened as of their arrival: seal them "now"
    return datetime.now(UTC)
