"""Every demo flow runs under ``dag.test()`` with the in-memory adapters.

The partners (the demo's traffic mix: valid, invalid, duplicate, a large attachment) send
through the memory twin; one ``dag.test()`` run of the flow's DAG must leave every message
settled as expected in the ledger, the recipients holding their messages and the senders their
receipts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kcbus.airflow.demo.summary import check, summarize
from kcbus.airflow.demo.traffic import send_demo_traffic
from kcbus.airflow.demo.world import DemoWorld
from tests.dags.scenario import (
    PASSPHRASE,
    T0,
    Clock,
    Keys,
    collect_all,
    expect_arrivals,
    make_config,
    memory_endpoints,
)


@pytest.fixture
def bus_env(
    tmp_path: Path, demo_keys: Keys, monkeypatch: pytest.MonkeyPatch, airflow_db: None
) -> Iterator[tuple[Path, DemoWorld, str]]:
    from kcbus.airflow.settings import load_config

    keys = demo_keys.copy_to(tmp_path / "keys")
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    name = f"flows-{tmp_path.name}"
    config_dir = make_config(tmp_path / "config", keys=keys, endpoints=memory_endpoints(name),
                             ledger=ledger)
    monkeypatch.setenv("KCBUS_CONFIG", str(config_dir))
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("KCBUS_KEYSTORE_PASSPHRASE", PASSPHRASE)
    world = DemoWorld(load_config(config_dir), keys / "partners", PASSPHRASE)
    world.prepare_keys(T0 - timedelta(days=1))
    try:
        yield config_dir, world, ledger
    finally:
        world.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flow", "inline_seconds"),
    # bauantrag and tarifdaten fan out to the mapped per-destination tasks (no inline
    # delivery), the others take the fast path.
    [("entlassbrief", 5.0), ("bauantrag", 0.0), ("tarifdaten", 0.0), ("kommunen", 5.0)],
)
def test_flow_runs_under_dag_test_with_in_memory_adapters(
    flow: str, inline_seconds: float, bus_env: tuple[Path, DemoWorld, str], tmp_path: Path
) -> None:
    from kcbus.airflow.factory import flow_dags
    from kcbus.ledger import Ledger

    _, world, ledger_url = bus_env
    clock = Clock(datetime.now(tz=T0.tzinfo) - timedelta(minutes=1))
    expectations = send_demo_traffic(
        world, now=clock, scratch=tmp_path / "scratch", large_mb=3, letters=2,
        tariff_zones=300, flows=(flow,),
    )
    dag = flow_dags()[f"kcbus_{flow}"]
    run = dag.test(run_conf={"inline_seconds": inline_seconds})
    assert str(run.state) == "success"
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    if inline_seconds == 0:
        # Fanned out: one labelled delivery task per destination, then settle.
        delivers = [k for k in states if k[0] == "deliver"]
        assert delivers and all(states[k] == "success" for k in delivers)
        assert states[("settle", -1)] == "success"

    with Ledger(ledger_url) as ledger:
        assert check(ledger, expectations) == []
        (summary,) = [s for s in summarize(ledger) if s.flow == flow]
        assert summary.settled
        assert summary.received == len(expectations)
    expect_arrivals(expectations, collect_all(world, tmp_path / "scratch"))
