"""Run the embedded Airflow (api-server, scheduler, dag-processor, triggerer) as subprocesses.

This module imports no Airflow: it drives the ``airflow`` CLI of the running interpreter's
environment, so ``kcbus demo`` starts in a fraction of a second and Airflow's own start-up
happens in the components.

Invariants:

* Every component runs in its own session (process group) and is stopped by that PID —
  SIGTERM, then SIGKILL after a grace period — whatever happens in the caller (errors,
  Ctrl-C): use :class:`AirflowStack` as a context manager.
* All components share one environment: ``AIRFLOW_HOME``, the API port, and a JWT secret
  generated per start (Airflow 3's scheduler signs task tokens that the api-server's execution
  API must accept; without a shared secret every task fails authentication). Secrets live only
  in the environment of the processes, never in ``airflow.cfg`` or on disk.
* Ready means ``GET /api/v2/monitor/health`` reports metadatabase, scheduler, triggerer and
  dag-processor healthy. A component that exits before that fails the start with the tail of
  its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from xoev import ConfigurationError, TransientFault

__all__ = ["COMPONENTS", "AirflowStack", "AirflowStartError", "airflow_executable", "free_port"]

#: The four long-running Airflow 3 components (what ``airflow standalone`` starts).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
_HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class AirflowStartError(TransientFault):
    """Airflow did not become healthy (a component died or the wait timed out)."""

    def __init__(self, problem: str, *, component: str | None = None) -> None:
        super().__init__(problem)
        self.component = component
        self.problem = problem


def airflow_executable() -> Path:
    """The ``airflow`` script beside this interpreter (``.venv/bin/airflow``)."""
    candidate = Path(sys.executable).with_name("airflow")
    if not candidate.exists():
        raise ConfigurationError(f"airflow not found beside {sys.executable} (run scripts/setup)")
    return candidate


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a free port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise AirflowStartError("no free TCP port on 127.0.0.1")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@dataclass
class AirflowStack:
    """The embedded Airflow of ``kcbus demo`` (and of the benchmark).

    ``home`` is ``AIRFLOW_HOME`` (the repository root: its ``airflow.cfg`` is the embedded
    default). ``extra_env`` adds variables for every component (e.g. ``AIRFLOW_CONN_*``
    connections, ``KCBUS_CONFIG``).
    """

    home: Path
    port: int = 8080
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        if self.log_dir is None:
            self.log_dir = self.home / "var" / "airflow" / "logs" / "components"
        bin_dir = str(airflow_executable().parent)
        base_url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            **self.extra_env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> Mapping[str, str]:
        """The environment every component runs with (includes the JWT secret)."""
        return self._env

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    def passwords_file(self) -> Path:
        """Where Airflow's simple auth manager writes the generated user passwords."""
        return self.home / "var" / "airflow" / "passwords.json"

    def passwords(self) -> dict[str, str]:
        try:
            data = json.loads(self.passwords_file().read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def cli(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run one ``airflow`` CLI command in this stack's environment; raise on failure."""
        result = subprocess.run(
            [str(airflow_executable()), *args],
            env=self._env, cwd=self.home, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).splitlines()[-10:])
            raise AirflowStartError(f"airflow {' '.join(args)} failed:\n{tail}")
        return result

    def migrate(self) -> None:
        """``airflow db migrate`` (creates the SQLite metadata DB on first use), then WAL mode
        for it (see :mod:`kcbus.airflow.sqlite`)."""
        from kcbus.airflow.sqlite import use_wal

        folder = self.home / "var" / "airflow"
        folder.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        database = folder / "airflow.db"
        if database.exists():
            use_wal(database)

    def _spawn(self, name: str) -> None:
        assert self.log_dir is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            self._procs[name] = subprocess.Popen(
                [str(airflow_executable()), name],
                env=self._env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()

    def start(self, timeout: float = 180.0) -> None:
        """Start the api-server, and once it answers the other components: tasks the
        scheduler starts talk to the api-server's execution API from their first second."""
        self._spawn("api-server")
        start = time.monotonic()
        while not self.health():
            self._check_alive()
            if time.monotonic() - start > timeout:
                raise AirflowStartError(f"api-server not answering after {timeout:.0f} s",
                                        component="api-server")
            time.sleep(0.5)
        for name in COMPONENTS:
            if name != "api-server":
                self._spawn(name)

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                assert self.log_dir is not None
                raise AirflowStartError(
                    f"airflow {name} exited with {proc.returncode}:\n"
                    f"{_tail(self.log_dir / f'{name}.log')}",
                    component=name,
                )

    def health(self) -> dict[str, str]:
        """Component → status from the api-server's health endpoint ({} if unreachable)."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return {}
        return {
            key: str(value.get("status"))
            for key, value in data.items()
            if isinstance(value, dict)
        }

    def api(
        self, method: str, path: str, *, token: str | None = None,
        body: Mapping[str, object] | None = None, attempts: int = 3, timeout: float = 60.0,
    ) -> dict[str, object]:
        """One call to the api-server (``path`` under the base URL); JSON in, JSON out.

        Timeouts, refused connections and 5xx answers are retried (a busy single-worker
        api-server on SQLite answers late or loses a lock race); 4xx answers are not."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
            request.add_header("Content-Type", "application/json")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    answer = json.loads(resp.read() or b"{}")
                return answer if isinstance(answer, dict) else {"items": answer}
            except urllib.error.HTTPError as exc:
                # 5xx: on SQLite a writer may have waited too long for the lock; try again.
                if exc.code < 500 or attempt == attempts:
                    raise AirflowStartError(f"{method} {path}: HTTP {exc.code}") from exc
                time.sleep(2.0 * attempt)
            except (OSError, ValueError) as exc:
                if attempt == attempts:
                    raise AirflowStartError(f"{method} {path}: {type(exc).__name__}") from exc
                time.sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def token(self, user: str = "admin") -> str:
        """An API token for ``user`` (simple auth manager, generated password)."""
        password = self.passwords().get(user)
        if password is None:
            raise AirflowStartError(f"no generated password for {user} in {self.passwords_file()}")
        answer = self.api("POST", "/auth/token", body={"username": user, "password": password})
        return str(answer["access_token"])

    def wait_healthy(self, timeout: float = 180.0) -> float:
        """Block until every component is healthy; returns the seconds waited."""
        start = time.monotonic()
        while True:
            self._check_alive()
            status = self.health()
            if status and all(status.get(key) == "healthy" for key in _HEALTH_KEYS):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AirflowStartError(
                    f"Airflow not healthy after {timeout:.0f} s (status: {status or 'no answer'})"
                )
            time.sleep(0.5)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after ``grace``."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self._procs.values():
            # The group may hold task processes even after its leader exited.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
