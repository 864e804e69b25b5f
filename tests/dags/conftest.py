"""DAG tests: an isolated AIRFLOW_HOME, a migrated metadata DB, the demo partners' keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.airflow_home import use_test_airflow_home

use_test_airflow_home()

from tests.dags.scenario import Keys, make_keys  # noqa: E402 - after AIRFLOW_HOME is set


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """The test AIRFLOW_HOME's metadata DB, migrated once per session (~5 s)."""
    from airflow.utils import db

    db.initdb()
    yield


@pytest.fixture(scope="session")
def demo_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Keystores of the bus and every demo partner (RSA-4096 for the fitconnect one: slow,
    so once per session; tests copy them)."""
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def tmp_home(tmp_path: Path) -> Path:
    return tmp_path
