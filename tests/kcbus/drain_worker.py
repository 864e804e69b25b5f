"""A bus worker that drains a shared file-drop inbox into a shared ledger until all is settled.

    python -m tests.kcbus.drain_worker CONFIG LEDGER_URL NAME

Several of these run at once in the PostgreSQL test; the ledger's claims (``FOR UPDATE SKIP
LOCKED``) keep their batches apart. Prints ``DONE <counts as JSON>`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kcbus.bus import Bus, StageCounts
from kcbus.ledger import SETTLED, Status
from tests.kcbus.world import PASSPHRASE


def main() -> int:
    config, ledger_url, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    bus = Bus.open(config, ledger_url=ledger_url, passphrase=PASSPHRASE, actor=name)
    total = StageCounts()
    idle = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        counts = bus.drain(limit=200, max_rounds=1)
        total += counts
        if counts.progress:
            idle = 0
            continue
        idle += 1
        stats = bus.ledger.stats()
        unsettled = {s for s in stats if Status(s) not in SETTLED}
        waiting = bus.ledger.due_destinations(bus.runtime.now())
        if not unsettled and not waiting and idle >= 3:
            break
        time.sleep(0.05)
    print("DONE " + json.dumps(total.as_dict()), flush=True)
    bus.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
