"""A bus worker for the seal-then-send crash test: drains the bus through :class:`Bus`'s own
methods (``deliver_counts`` seals, commits, then sends) and records every envelope it hands to
a transport — recipient, envelope ID, SHA-256 of the bytes — in a log file, synced before it
goes on. With DIE_AT ``deliver-sent`` it says so on stdout after the first send to PARTNER and
waits to be killed (``kill -9`` by the test): the envelope is with the recipient, the deliver
unit has not committed.

    python -m tests.kcbus.send_crash_worker CONFIG LEDGER_URL LOG PARTNER [DIE_AT]
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from adapters.transport import Outbound, Transport, connect
from kcbus.bus import Bus
from tests.kcbus.world import PASSPHRASE, Wrapped


def die_here() -> None:
    print("AT deliver-sent", flush=True)
    while True:  # wait for SIGKILL
        time.sleep(1)


class Recording(Wrapped):
    """A partner's real transport that logs each envelope it sent, durably."""

    def __init__(self, inner: Transport, log: Path, *, die_after_send: bool) -> None:
        super().__init__(inner)
        self.log = log
        self.die_after_send = die_after_send

    def send(self, item: Outbound) -> None:
        self.inner.send(item)
        digest = hashlib.sha256(item.read()).hexdigest()
        with self.log.open("a") as out:
            out.write(f"{item.recipient} {item.envelope_id} {digest}\n")
            out.flush()
            os.fsync(out.fileno())
        if self.die_after_send:
            die_here()


def main() -> int:
    config, ledger_url, log, partner = (
        Path(sys.argv[1]),
        sys.argv[2],
        Path(sys.argv[3]),
        sys.argv[4],
    )
    die = len(sys.argv) > 5
    bus = Bus.open(config, ledger_url=ledger_url, passphrase=PASSPHRASE, actor="send-worker")
    for pid, each in bus.config.partners.items():
        assert each.deliver_to is not None
        recording = Recording(connect(each.deliver_to), log, die_after_send=die and pid == partner)
        bus.runtime.transports[pid] = recording  # type: ignore[assignment]
    if die:
        bus.deliver_counts(None)  # seals what waits (committed), sends, dies after the send
        raise AssertionError("nothing was sent to " + partner)
    bus.drain()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
