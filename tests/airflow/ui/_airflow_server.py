"""A real Airflow 3 API server for the operator-view tests, in its own temporary AIRFLOW_HOME.

``airflow db migrate`` on SQLite, then ``airflow api-server`` on a free port of 127.0.0.1, with
the SimpleAuthManager and three users of known passwords: ``admin`` (ADMIN), ``op`` (OP) and
``viewer`` (VIEWER). The kcbus plugin is found through the package's entry point, as in
production. The server runs in its own process group and is stopped by that PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers._process import (
    ServerStartError,
    free_port,
    kill_group,
    log_tail,
    wait_for,
)

__all__ = ["PASSWORDS", "AirflowServer", "airflow_api_server", "migrated_database"]

PASSWORDS = {"admin": "admin-pw-1", "op": "op-pw-2", "viewer": "viewer-pw-3"}
_ROLES = {"admin": "admin", "op": "op", "viewer": "viewer"}
_AIRFLOW = Path(sys.executable).with_name("airflow")


@dataclass(frozen=True)
class AirflowServer:
    url: str
    home: Path
    log: Path

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": PASSWORDS[user]},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self, user: str | None) -> httpx.Client:
        """An HTTP client logged in as ``user`` (bearer token), or anonymous for ``None``."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def _env(home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    # Start from a clean slate: the test process may run with another AIRFLOW_HOME (tests of
    # kcbus.airflow set one up); none of its AIRFLOW_* settings may leak into this server.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "KCBUS_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{user}:{role}" for user, role in _ROLES.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
            "AIRFLOW__API__SECRET_KEY": os.urandom(16).hex(),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        }
    )
    env.update(extra)
    return env


def migrated_database(home: Path) -> Path:
    """An Airflow metadata database (SQLite) migrated to this Airflow's schema."""
    home.mkdir(parents=True, exist_ok=True)
    env = _env(home, {})
    migrate = subprocess.run(
        [str(_AIRFLOW), "db", "migrate"], env=env, capture_output=True, timeout=300, check=False
    )
    if migrate.returncode != 0:
        tail = migrate.stderr.decode(errors="replace")[-800:]
        raise ServerStartError(f"airflow db migrate failed ({migrate.returncode}): {tail}")
    return home / "airflow.db"


@contextmanager
def airflow_api_server(
    home: Path, extra_env: Mapping[str, str], *, database: Path | None = None
) -> Iterator[AirflowServer]:
    """Start the server in ``home``; ``database`` is a migrated metadata database to copy
    (saves the migration when several servers run in one session)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(exist_ok=True)
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    env = _env(home, extra_env)
    log = home / "api-server.log"
    if database is not None:
        shutil.copyfile(database, home / "airflow.db")
    else:
        migrated_database(home)
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(_AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=120, what="airflow api-server", proc=proc, log=log)
        yield AirflowServer(url=url, home=home, log=log)
    finally:
        kill_group(proc)
        if proc.returncode not in (0, -15, None):
            print(f"api-server exited {proc.returncode}: {log_tail(log)}")
