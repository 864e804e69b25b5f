"""The repository's airflow.cfg is the embedded default and works with AIRFLOW_HOME=<repo>."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.airflow.airflow_home import PROJECT_ROOT


def _get(home: Path, section: str, key: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(home)
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run([str(airflow), "config", "get-value", section, key], env=env,
                            capture_output=True, text=True, check=True, timeout=120)
    return result.stdout.strip()


def test_embedded_default_settings_expand_airflow_home() -> None:
    home = PROJECT_ROOT
    assert _get(home, "core", "executor") == "LocalExecutor"
    assert _get(home, "core", "parallelism") == "4"
    assert _get(home, "core", "load_examples") == "False"
    assert _get(home, "core", "dags_folder") == f"{home}/dags"
    # $AIRFLOW_HOME is expanded: the SQLite file lives in the untracked var/ of the checkout.
    assert _get(home, "database", "sql_alchemy_conn") == f"sqlite:///{home}/var/airflow/airflow.db"
    assert "var/" in (PROJECT_ROOT / ".gitignore").read_text().split()


def test_sqlite_connect_args_import_and_no_secrets_in_the_file() -> None:
    from kcbus.airflow.sqlite import CONNECT_ARGS

    assert float(str(CONNECT_ARGS["timeout"])) >= 30
    text = (PROJECT_ROOT / "airflow.cfg").read_text().lower()
    for secret in ("fernet_key", "jwt_secret", "secret_key", "password ="):
        assert secret not in text
