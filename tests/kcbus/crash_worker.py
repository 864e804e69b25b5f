"""A bus worker for the crash test: runs the pipeline stage by stage and, at the point named on
its command line, says so on stdout and waits to be killed (``kill -9`` by the test).

    python -m tests.kcbus.crash_worker CONFIG LEDGER_URL [DIE_AT]

Points: ``receive-unacked`` (ledger committed, transport not yet acknowledged), ``received``,
``opened``, ``validated``, ``routed``, ``sealed``, ``deliver-sent`` (the envelope is with the
recipient's transport, the ledger does not know yet), ``delivered``, ``receipts-sealed``,
``receipts-delivered``. Without DIE_AT it drains everything and exits 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from adapters.transport import Delivery, Outbound, Transport, connect
from kcbus.bus import Bus
from kcbus.pipeline import (
    deliver_batch,
    open_batch,
    route_batch,
    seal_batch,
    validate_batch,
)
from tests.kcbus.world import PASSPHRASE, Wrapped

DIE_AT = sys.argv[3] if len(sys.argv) > 3 else None


def point(name: str) -> None:
    if name == DIE_AT:
        print(f"AT {name}", flush=True)
        while True:  # wait for SIGKILL
            time.sleep(1)


class Hooked(Wrapped):
    """A transport whose acknowledge/send stop at the crash points around them."""

    def __init__(self, inner: Transport, *, on_ack: str | None = None,
                 after_send: str | None = None) -> None:
        super().__init__(inner)
        self.on_ack = on_ack
        self.after_send = after_send

    def acknowledge(self, delivery: Delivery) -> None:
        if self.on_ack:
            point(self.on_ack)
        self.inner.acknowledge(delivery)

    def send(self, item: Outbound) -> None:
        self.inner.send(item)
        if self.after_send:
            point(self.after_send)


def main() -> int:
    config, ledger_url = Path(sys.argv[1]), sys.argv[2]
    bus = Bus.open(config, ledger_url=ledger_url, passphrase=PASSPHRASE, actor="crash-worker")
    rt = bus.runtime
    for pid, partner in bus.config.partners.items():
        assert partner.deliver_to is not None
        rt.transports[pid] = Hooked(connect(partner.deliver_to), after_send="deliver-sent")  # type: ignore[assignment]
    inbox = Hooked(connect(bus.config.bus.inbound[0]), on_ack="receive-unacked")
    bus.receive_batch(inbox, 100)  # type: ignore[arg-type]
    point("received")
    for name, stage in (("opened", open_batch), ("validated", validate_batch),
                        ("routed", route_batch), ("sealed", seal_batch)):
        stage(rt, 100)
        point(name)
    deliver_batch(rt, 100)
    point("delivered")
    seal_batch(rt, 100)
    point("receipts-sealed")
    deliver_batch(rt, 100)
    point("receipts-delivered")
    for transport in rt.transports.values():
        transport.after_send = None  # type: ignore[attr-defined]
    bus.drain(receive=False)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
