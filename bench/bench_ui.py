"""Operator view: how fast the page's API answers with 100,000 messages in the ledger.

A SQLite ledger (the embedded default) is filled through the ledger's own unit-of-work API
with 100,000 messages over 30 days (``--quick``: 10,000): several flows and partners, a
realistic share of REJECTED and DEAD, six events each. A real ``airflow api-server`` with the
kcbus plugin then answers the page's API calls over HTTP, Airflow's SimpleAuthManager checking
a real JWT on every request: what the operator's browser waits for.

Each figure is the median latency in ms of one page action (goal: under a second), beside the
baseline of a bare ``SELECT count(*) FROM messages`` on the same database in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench._harness import Figure

FLOWS = ("bauantrag", "kommunen", "entlassbrief", "tarifdaten")
SENDERS = ("gemeinde-musterdorf", "stadt-beispielstadt", "lra-musterkreis",
           "klinikum-musterkreis", "tarif-rmv")
RECIPIENTS = ("lra-musterkreis", "gemeinde-musterdorf", "praxis-dr-beispiel", "tarif-vab",
              "ticketing-feed")
BATCH = 1000
PASSWORD = "bench-password"
ROUNDS = 5


def _fill(url: str, total: int) -> tuple[str, str]:
    """Write ``total`` messages; returns one UUID and one task actor to look for."""
    from kcbus.airflow.ui.actor import task_actor
    from kcbus.ledger import DeliveryStatus, Ledger, NewEnvelope, Status

    now = datetime.now(UTC)
    span = timedelta(days=30)
    batches = max(1, total // BATCH)
    probe_uuid = ""
    probe_actor = task_actor("kcbus_bauantrag", "scheduled__probe", "deliver", 0)
    with Ledger(url) as ledger:
        for b in range(batches):
            moment = now - span + span * (b + 0.5) / batches
            actor = probe_actor if b == batches - 1 else f"kcbus@bench:{b}"
            with ledger.unit(actor=actor, now=moment) as unit:
                envelopes = [
                    NewEnvelope(data=os.urandom(24), envelope_id=str(uuid.uuid4()),
                                source="memory://bench", peer=None)
                    for _ in range(BATCH)
                ]
                ids = [i for i in unit.receive(envelopes) if i is not None]
                uuids = [str(uuid.uuid4()) for _ in ids]
                unit.claim_uuids(list(zip(ids, uuids, strict=True)))
                deliveries = unit.add_deliveries(
                    [(mid, RECIPIENTS[(mid * 7) % len(RECIPIENTS)]) for mid in ids]
                )
                for n, (mid, did) in enumerate(zip(ids, deliveries, strict=True)):
                    final = (Status.DEAD if n % 97 == 0 else
                             Status.REJECTED if n % 41 == 0 else Status.ACKNOWLEDGED)
                    unit.update(
                        mid, uuid=uuids[n], route=FLOWS[mid % len(FLOWS)],
                        inspection="end-to-end" if mid % len(FLOWS) == 2 else "full",
                        sender=SENDERS[mid % len(SENDERS)],
                        recipient=RECIPIENTS[(mid * 7) % len(RECIPIENTS)],
                        message_type=f"baugenehmigung.antrag.02{mid % 10:02d}",
                        standard="XBau", version="2.6", status=final, attempts=1,
                        reason_code="transient" if final is Status.DEAD else None,
                        reason="connection refused" if final is Status.DEAD else None,
                    )
                    for stage, status in (("open", Status.OPENED),
                                          ("validate", Status.VALIDATED),
                                          ("route", Status.ROUTED)):
                        unit.event(mid, stage, status)
                    unit.update_delivery(did, status=DeliveryStatus.DELIVERED, attempts=1)
                    unit.event(mid, "deliver", final, delivery_id=did)
                probe_uuid = uuids[len(uuids) // 2]
    return probe_uuid, probe_actor


@contextmanager
def _api_server(home: Path, ledger_url: str) -> Iterator[str]:
    """A real ``airflow api-server`` (own AIRFLOW_HOME, SQLite, SimpleAuthManager, the kcbus
    plugin from the entry point) on a free port; yields its URL; stopped by its PID."""
    airflow = Path(sys.executable).with_name("airflow")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "KCBUS_LEDGER"))}
    env.update({
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "airflow" / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__KCBUS__LEDGER_URL": ledger_url,
    })
    (home / "airflow" / "dags").mkdir(parents=True)
    (home / "passwords.json").write_text(json.dumps({"bench": PASSWORD}))
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (home / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("api-server not healthy after 180 s")
            time.sleep(0.25)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _median(call: Callable[[], object]) -> float:
    call()  # warm: compiled statements, page cache
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> Iterable[Figure]:
    total = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="kcbus-bench-ui-") as tmp:
        home = Path(tmp)
        url = f"sqlite:///{home / 'ledger.sqlite'}"
        probe_uuid, _actor = _fill(url, total)

        import sqlite3

        def bare_count() -> None:
            with sqlite3.connect(home / "ledger.sqlite") as conn:
                conn.execute("SELECT count(*) FROM messages").fetchone()

        baseline = _median(bare_count) * 1000

        with _api_server(home, url) as server, httpx.Client(base_url=server) as client:
            login = client.post("/auth/token", json={"username": "bench", "password": PASSWORD})
            login.raise_for_status()
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

            def get(path: str, **params: str) -> Callable[[], object]:
                def call() -> object:
                    response = client.get(f"/kcbus/api/v1/{path}", params=params)
                    assert response.status_code == 200, response.text
                    return response.json()

                return call

            until = datetime.now(UTC)
            day = {"since": (until - timedelta(days=1)).isoformat(), "until": until.isoformat(),
                   "bucket": "hour"}
            month = {"since": (until - timedelta(days=30)).isoformat(),
                     "until": until.isoformat(), "bucket": "day"}
            page_load = [get("me"), get("counts", **day), get("failures")]
            actions: list[tuple[str, Callable[[], object]]] = [
                ("page load (me + 24 h chart + failures)",
                 lambda: [call() for call in page_load]),
                ("chart: 30 days by day, grouped by flow", get("counts", group_by="flow", **month)),
                ("search by message UUID", get("messages", uuid=probe_uuid)),
                ("search by sender, newest 50 + total", get("messages", sender=SENDERS[0])),
                ("search: DEAD in one flow", get("messages", status="DEAD", flow=FLOWS[0])),
                ("one message's history", get(f"messages/{probe_uuid}")),
                ("messages of one task instance", get(
                    "messages", dag_id="kcbus_bauantrag", run_id="scheduled__probe",
                    task_id="deliver", map_index="0")),
            ]
            size = f"{total // 1000}k msgs"
            for name, call in actions:
                yield Figure(
                    name=f"ui: {name} ({size})",
                    value=_median(call) * 1000,
                    unit="ms",
                    baseline="SELECT count(*) same db",
                    baseline_value=baseline,
                    goal=1000.0,
                    goal_on="value",
                    lower_is_better=True,
                )
