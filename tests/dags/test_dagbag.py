"""The DAG folder: no import errors, one DAG per route, wired as the flows need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.scenario import PROJECT

FLOW_DAGS = {"kcbus_entlassbrief", "kcbus_bauantrag", "kcbus_tarifdaten", "kcbus_kommunen"}


@pytest.fixture
def demo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's demo config, its ${KCBUS_VAR} state in a temporary folder."""
    monkeypatch.setenv("KCBUS_CONFIG", str(PROJECT / "config"))
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    return PROJECT / "config"


def _dagbag() -> object:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT / "dags"))


def test_dagbag_has_no_import_errors_and_one_dag_per_route(demo_config: Path) -> None:
    bag = _dagbag()
    assert bag.import_errors == {}  # type: ignore[attr-defined]
    assert set(bag.dag_ids) == FLOW_DAGS  # type: ignore[attr-defined]


def test_each_flow_dag_drains_in_batches_with_labelled_deliveries(demo_config: Path) -> None:
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
    from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

    bag = _dagbag()
    for dag_id in FLOW_DAGS:
        dag = bag.dags[dag_id]  # type: ignore[attr-defined]
        assert set(dag.task_dict) == {"intake", "deliver", "settle"}
        deliver = dag.task_dict["deliver"]
        assert deliver.map_index_template == "to {{ task.op_kwargs['destination'] }}"
        assert dag.max_active_runs == 1
        assert not dag.catchup
        for task in dag.tasks:
            assert task.retries >= 1
            assert task.execution_timeout is not None
        assert "kcbus" in dag.tags
    # Event-driven flows watch their senders' queues; the tariff batch runs daily.
    for dag_id in ("kcbus_entlassbrief", "kcbus_bauantrag", "kcbus_kommunen"):
        timetable = bag.dags[dag_id].timetable  # type: ignore[attr-defined]
        assert isinstance(timetable, AssetOrTimeSchedule)
        watchers = [w for a in timetable.asset_condition.objects for w in a.watchers]
        assert watchers, dag_id
        # The embedded default's inbound drop folders, each watched by a trigger.
        assert all(type(w.trigger).__name__ == "DropFolderTrigger" for w in watchers)
    tarif = bag.dags["kcbus_tarifdaten"].timetable  # type: ignore[attr-defined]
    assert isinstance(tarif, CronTriggerTimetable)


def test_flow_dags_serialize_with_their_triggers(demo_config: Path) -> None:
    """What the dag-processor stores: the triggers go in as (classpath, kwargs)."""
    from airflow.serialization.serialized_objects import DagSerialization

    bag = _dagbag()
    text = str(DagSerialization.to_dict(bag.dags["kcbus_entlassbrief"]))  # type: ignore[attr-defined]
    assert "kcbus.airflow.triggers.DropFolderTrigger" in text
    assert "drop/von-klinikum-musterkreis" in text  # the hospital's inbound folder


def test_dag_file_runs_standalone(demo_config: Path) -> None:
    """``python dags/kcbus_flows.py`` works (its speed is a benchmark: bench_airflow)."""
    env = {**os.environ}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "dags" / "kcbus_flows.py")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_broken_route_config_is_an_import_error_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for source in (PROJECT / "config").glob("*.yaml"):
        (config / source.name).write_text(source.read_text())
    routes = config / "routes.yaml"
    routes.write_text(routes.read_text().replace("to: [tarif-vab, ticketing-feed]",
                                                 "to: [tarif-vab, ticketing-fed]"))
    monkeypatch.setenv("KCBUS_CONFIG", str(config))
    monkeypatch.setenv("KCBUS_HOME", str(PROJECT))
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    bag = _dagbag()
    errors = list(bag.import_errors.values())  # type: ignore[attr-defined]
    assert len(errors) == 1
    # The file the engineer edits, the line, the field, and a suggestion.
    line = next(n for n, text in enumerate(routes.read_text().splitlines(), 1)
                if "ticketing-fed" in text)
    assert f"{routes}:{line}: routes.tarifdaten.to" in errors[0]
    assert "did you mean 'ticketing-feed'" in errors[0]
