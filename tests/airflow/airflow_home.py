"""An isolated ``AIRFLOW_HOME`` for the test session, built from the repository's airflow.cfg.

Airflow reads its configuration once, when ``airflow`` is first imported, so
:func:`use_test_airflow_home` must run before that (the conftests of tests/airflow and
tests/dags call it at import). The home is a fresh temporary folder: the tests never touch the
repository's ``var/``. Idempotent: the first caller picks the folder, later callers reuse it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["PROJECT_ROOT", "use_test_airflow_home"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_MARK = "KCBUS_TEST_AIRFLOW_HOME"


def use_test_airflow_home() -> Path:
    existing = os.environ.get(_MARK)
    if existing and os.environ.get("AIRFLOW_HOME") == existing:
        return Path(existing)
    home = Path(tempfile.mkdtemp(prefix="kcbus-airflow-test-"))
    atexit.register(shutil.rmtree, home, True)
    # The repository's own config, so the tests exercise what `kcbus demo` runs with.
    shutil.copy(PROJECT_ROOT / "airflow.cfg", home / "airflow.cfg")
    os.environ.update(
        {
            _MARK: str(home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
            # DAG files stay in the repository: dag.test() re-parses them from the dags folder.
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    return home
