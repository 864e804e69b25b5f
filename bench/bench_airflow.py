"""Airflow moving messages: latency with the event trigger, batched throughput, DAG parse time.

One embedded Airflow (SQLite, LocalExecutor, parallelism 4; the repository's airflow.cfg) runs
the demo flows over the embedded default's drop folders, with a temporary AIRFLOW_HOME. The
Entlassbrief flow (hospital → GP practice, end-to-end sealed) is measured three ways in the
same run:

* **latency** partner → recipient with the event trigger (``DropFolderTrigger`` →
  ``AssetWatcher`` → one DAG run): one letter at a time, from the moment the hospital's file is
  published to the moment the practice has opened it. Goal: p50 ≤ 5 s.
* **throughput** of the batched flow: ``n`` letters published at once, until the last is
  opened by the practice.
* **baseline, the naive Airflow way**: one DAG run per message (the flow DAG paused, a copy
  that takes one envelope per run triggered through the REST API for each letter), on a
  handful of letters; its latency and rate are the baselines of the two figures above.

Plus the DAG file's parse time (``python dags/kcbus_flows.py``) beside ``import airflow.sdk``
alone, and the difference (what the DAG file costs beyond Airflow's import; goal < 1 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench._harness import Figure

PROJECT = Path(__file__).resolve().parent.parent
FLOW = "entlassbrief"
FLOW_DAG = "kcbus_entlassbrief"
NAIVE_DAG = "kcbus_entlassbrief_one_per_run"
HOSPITAL = "klinikum-musterkreis"
PRACTICE = "praxis-dr-beispiel"

_NAIVE_DAG_FILE = f'''"""Benchmark baseline: the naive Airflow way, one DAG run per message."""
from kcbus.airflow.factory import build_flow_dag
from kcbus.airflow.flows import flow_plans
from kcbus.airflow.settings import load_config

_plan = next(p for p in flow_plans(load_config()) if p.name == "{FLOW}")
naive = build_flow_dag(_plan, dag_id="{NAIVE_DAG}", schedule=None, max_envelopes=1)
'''


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def _parse_seconds(env: dict[str, str]) -> tuple[float, float]:
    """Best of 3: ``python dags/kcbus_flows.py`` and ``python -c 'import airflow.sdk'``."""
    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
            times.append(time.perf_counter() - start)
        return min(times)

    dag_file = best([sys.executable, str(PROJECT / "dags" / "kcbus_flows.py")])
    bare = best([sys.executable, "-c", "import airflow.sdk"])
    return dag_file, bare


@contextmanager
def _airflow(root: Path) -> Iterator[tuple[object, object, dict[str, str]]]:
    from kcbus.airflow.demo.stack import AirflowStack, free_port
    from kcbus.airflow.demo.world import DemoWorld

    home = root / "home"
    dags = root / "dags"
    var = root / "var"
    home.mkdir()
    dags.mkdir()
    shutil.copy(PROJECT / "airflow.cfg", home / "airflow.cfg")
    shutil.copy(PROJECT / "dags" / "kcbus_flows.py", dags / "kcbus_flows.py")
    (dags / "kcbus_bench_naive.py").write_text(_NAIVE_DAG_FILE)
    env = {
        "KCBUS_HOME": str(PROJECT),
        "KCBUS_VAR": str(var),
        "KCBUS_CONFIG": str(PROJECT / "config"),
        "KCBUS_LEDGER": f"sqlite:///{var / 'ledger.sqlite'}",
        "KCBUS_KEYSTORE_PASSPHRASE": "kcbus-bench",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
    }
    os.environ.update(env)
    from kcbus.airflow.settings import load_config

    world = DemoWorld(load_config(), var / "keys" / "partners", "kcbus-bench")
    world.prepare_keys(datetime.now(UTC) - timedelta(minutes=5))
    stack = AirflowStack(home=home, port=free_port(8080), extra_env=env)
    with stack:
        stack.migrate()
        stack.start()
        stack.wait_healthy()
        yield stack, world, env
    world.close()


def _letter(world: object, n: int) -> bytes:
    from kcbus.airflow.demo import documents as docs

    now = datetime.now(UTC)
    return docs.entlassbrief(
        document_id=f"BENCH-{now:%H%M%S%f}-{n}", set_id=f"SET-{n}", created=now,
        hospital=world.office(HOSPITAL), practice=world.office(PRACTICE),  # type: ignore[attr-defined]
        patient_number=n,
    )


def _send(world: object, n: int) -> object:
    return world.send(HOSPITAL, _letter(world, n), flow=FLOW,  # type: ignore[attr-defined]
                      now=datetime.now(UTC), end_to_end_for=PRACTICE)


def _arrivals(world: object, scratch: Path, want: int, timeout: float) -> list[float]:
    """Times (time.time()) at which the practice opened ``want`` more letters."""
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while len(times) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(times)} of {want} letters arrived in {timeout:.0f} s")
        got = world.collect(PRACTICE, datetime.now(UTC), scratch)  # type: ignore[attr-defined]
        times.extend(a.at for a in got if a.receipt is None)
        if len(times) < want:
            time.sleep(0.05)
    return times


def _wait_dags(stack: object, token: str, dag_ids: Iterable[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    want = set(dag_ids)
    while True:
        answer = stack.api("GET", "/api/v2/dags?limit=100", token=token)  # type: ignore[attr-defined]
        loaded = {d["dag_id"] for d in answer.get("dags", [])}
        if want <= loaded:
            for dag_id in want:
                stack.api("PATCH", f"/api/v2/dags/{dag_id}", token=token,  # type: ignore[attr-defined]
                          body={"is_paused": False})
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAGs not loaded: {sorted(want - loaded)}")
        time.sleep(1)


def _pause(stack: object, token: str, dag_id: str, paused: bool) -> None:
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", token=token,  # type: ignore[attr-defined]
              body={"is_paused": paused})


def run(args: argparse.Namespace) -> Iterable[Figure]:
    quick = bool(getattr(args, "quick", False))
    singles, batch, naive_n = (3, 40, 3) if quick else (8, 200, 5)
    root = Path(tempfile.mkdtemp(prefix="kcbus-bench-airflow-"))
    saved_env = dict(os.environ)
    try:
        with _airflow(root) as (stack, world, env):
            scratch = root / "scratch"
            token = stack.token()  # type: ignore[attr-defined]
            _wait_dags(stack, token, [FLOW_DAG, NAIVE_DAG])
            _pause(stack, token, NAIVE_DAG, True)
            # Warm-up: the first run pays for the triggerer picking up the watcher.
            _send(world, 0)
            _arrivals(world, scratch, 1, timeout=300)

            latencies = []
            for n in range(1, singles + 1):
                sent = _send(world, n)
                (arrived,) = _arrivals(world, scratch, 1, timeout=120)
                latencies.append(arrived - sent.at)  # type: ignore[attr-defined]

            first = time.time()
            for n in range(batch):
                _send(world, 1000 + n)
            last = max(_arrivals(world, scratch, batch, timeout=600))
            batched_rate = batch / (last - first)

            # The naive way: the event-driven DAG paused, one REST-triggered run per letter.
            _pause(stack, token, FLOW_DAG, True)
            _pause(stack, token, NAIVE_DAG, False)
            naive_latencies = []
            start = time.time()
            for n in range(naive_n):
                sent = _send(world, 5000 + n)
                stack.api("POST", f"/api/v2/dags/{NAIVE_DAG}/dagRuns", token=token,  # type: ignore[attr-defined]
                          body={"logical_date": None})
                (arrived,) = _arrivals(world, scratch, 1, timeout=180)
                naive_latencies.append(arrived - sent.at)  # type: ignore[attr-defined]
            naive_rate = naive_n / (time.time() - start)
            _pause(stack, token, FLOW_DAG, False)

        parse_env = {**saved_env, **env}
        dag_parse, bare_import = _parse_seconds(parse_env)
    except BaseException:
        # Keep Airflow's component logs of a failed run for the reader of the error.
        logs = root / "home" / "var" / "airflow" / "logs" / "components"
        if logs.is_dir():
            kept = Path(tempfile.gettempdir()) / "kcbus-bench-airflow-logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(logs, kept)
            print(f"bench_airflow: Airflow logs kept in {kept}", file=sys.stderr)
        raise
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(root, ignore_errors=True)

    p50, p95 = statistics.median(latencies), _percentile(latencies, 95)
    naive_p50, naive_p95 = statistics.median(naive_latencies), _percentile(naive_latencies, 95)
    yield Figure("airflow latency p50, event trigger", p50, "s",
                 "one run per message p50", naive_p50, goal=5.0, goal_on="value",
                 lower_is_better=True)
    yield Figure("airflow latency p95, event trigger", p95, "s",
                 "one run per message p95", naive_p95, lower_is_better=True)
    yield Figure(f"airflow flow throughput, batched ({batch} msgs)", batched_rate, "msg/s",
                 f"one run per message ({naive_n} msgs)", naive_rate)
    yield Figure("dag file parse (python dags/kcbus_flows.py)", dag_parse, "s",
                 "python -c 'import airflow.sdk'", bare_import, lower_is_better=True)
    # What the DAG file itself costs on top of Airflow's own import (config, DAG objects).
    yield Figure("dag file parse beyond the airflow import", max(dag_parse - bare_import, 0.0),
                 "s", "python -c 'import airflow.sdk'", bare_import, goal=1.0,
                 goal_on="value", lower_is_better=True)
