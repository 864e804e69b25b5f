"""Fixtures of the operator-view tests: a real Airflow API server with the kcbus plugin, reading
a real ledger (SQLite) that the tests write through the ledger's own API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kcbus.ledger import Ledger
from tests.airflow.ui._airflow_server import (
    AirflowServer,
    airflow_api_server,
    migrated_database,
)
from tests.servers._process import ServerStartError

#: Flows whose full-inspection content the server's operators may look at.
CONTENT_FLOW = "kommunen"


@dataclass(frozen=True)
class UiWorld:
    server: AirflowServer
    ledger: Ledger
    home: Path


@pytest.fixture(scope="session")
def airflow_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``airflow db migrate`` per session; each server starts from a copy."""
    try:
        return migrated_database(Path(tmp_path_factory.mktemp("airflow-db")))
    except ServerStartError as exc:
        pytest.fail(f"cannot prepare the Airflow database: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def ui_world(
    tmp_path_factory: pytest.TempPathFactory, airflow_database: Path
) -> Iterator[UiWorld]:
    """One API server and ledger per test module: the browser test's page shows only its own
    demo data, not what the API tests wrote."""
    home = Path(tmp_path_factory.mktemp("airflow-ui-home"))
    ledger_url = f"sqlite:///{home / 'ledger.sqlite'}"
    # The content key ring is the embedded default's (beside the database file), so the
    # server, these tests and the runtime of the browser test all read the same content.
    ledger = Ledger(ledger_url)
    env = {
        "AIRFLOW__KCBUS__LEDGER_URL": ledger_url,
        "AIRFLOW__KCBUS__UI_SHOW_CONTENT": CONTENT_FLOW,
    }
    try:
        with airflow_api_server(home / "airflow", env, database=airflow_database) as server:
            yield UiWorld(server=server, ledger=ledger, home=home)
    except ServerStartError as exc:
        pytest.fail(f"cannot start the Airflow API server: {exc}", pytrace=False)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def airflow_api(ui_world: UiWorld) -> AirflowServer:
    return ui_world.server
