"""Against a real PostgreSQL server: two worker processes drain 5,000 messages at the same
time. Claims with ``FOR UPDATE SKIP LOCKED`` keep them apart: every message is opened once and
delivered once, both workers did a share, none is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from adapters.envelope import seal
from adapters.transport import Outbound, connect
from kcbus.ledger import Ledger
from tests.kcbus.world import BUS, PROJECT, Keys, xbau_antrag
from tests.servers.postgres import PostgresServer

N = 5000

CONFIG = """\
bus:
  id: kcbus
  name: kcbus Landkreis Musterkreis
  address: {{verzeichnisdienst: DVDV, kennung: "kcbus:091870000000"}}
  keystore: {keys}
  inbound: ["file://{drop}/kcbus?fsync=false"]
partners:
  gemeinde-a:
    name: Gemeinde Musterdorf
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870120000"}}
    may_send: [baugenehmigung.*]
    receipts: []
  lra:
    name: Landratsamt Musterkreis
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870000000"}}
    deliver_to: "file://{drop}/lra?fsync=false"
routes:
  bauantrag:
    match: {{message_types: [baugenehmigung.*]}}
    to: [leser]
"""


@pytest.mark.real
@pytest.mark.slow
def test_two_workers_drain_5000_messages_on_postgres(
    tmp_path: Path, keys: Keys, postgres: PostgresServer
) -> None:
    url = postgres.new_database("kcbus_drain")
    drop = tmp_path / "drop"
    config = tmp_path / "kcbus.yaml"
    config.write_text(CONFIG.format(keys=keys.root / BUS, drop=drop))
    key_file = tmp_path / "ledger.keys"
    Ledger(url, keys=key_file).close()  # migrate once, make the content key

    now = datetime.now(UTC)
    template = xbau_antrag()
    uuids = []
    with connect(f"file://{drop}/kcbus?fsync=false") as inbox:
        for i in range(N):
            message_uuid = f"00000000-0000-4000-8000-{i:012d}"
            uuids.append(message_uuid)
            message = template.replace(
                template[template.index(b"<nachrichtenUUID>") + 17:
                         template.index(b"</nachrichtenUUID>")],
                message_uuid.encode(), 1,
            )
            sealed = seal(message, sender="gemeinde-a", recipient=BUS,
                          keystore=keys.stores["gemeinde-a"], now=now)
            inbox.send(Outbound(sealed.envelope_id, BUS, data=sealed.data()))

    env = {**os.environ, "PYTHONPATH": str(PROJECT), "KCBUS_LEDGER_KEYS": str(key_file)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.kcbus.drain_worker", str(config), url, name],
            env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("worker-1", "worker-2")
    ]
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("DONE "))
        results.append(json.loads(line[5:]))

    # Both took a share; together exactly N each of received, opened, delivered.
    assert all(r["opened"] > 0 for r in results)
    assert sum(r["received"] for r in results) == N
    assert sum(r["opened"] for r in results) == N
    assert sum(r["sent"] for r in results) == N

    engine = create_engine(url)
    with engine.connect() as conn:
        statuses: dict[str, int] = dict(conn.execute(text(
            "SELECT status, count(*) FROM messages GROUP BY status")).all())
        assert statuses == {"DELIVERED": N}
        # each message opened once and delivered once, by one worker each time
        per_message = Counter(
            (row.stage, row.n) for row in conn.execute(text(
                "SELECT stage, count(*) AS n FROM events WHERE status IS NOT NULL "
                "GROUP BY message_id, stage"))
        )
        assert set(per_message) == {("receive", 1), ("open", 1), ("validate", 1),
                                    ("route", 1), ("deliver", 2)}  # delivery + message
        actors = {a for (a,) in conn.execute(text("SELECT DISTINCT actor FROM events"))}
        assert actors == {"worker-1", "worker-2"}
        stored = {u for (u,) in conn.execute(text("SELECT uuid FROM messages"))}
        assert stored == set(uuids)
    engine.dispose()
    assert len(list((drop / "lra").glob("*.env"))) == N
