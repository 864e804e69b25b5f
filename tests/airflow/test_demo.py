"""The main job: ``kcbus demo --once`` from a clean checkout exits 0, and its summary is the
ledger's.

The checkout is a ``git clone`` of this repository's committed state into a temporary folder;
the demo runs from it (its own ``airflow.cfg``, ``dags/``, ``config/``, ``schemas/`` and sources
via ``PYTHONPATH``) with the project's installed dependencies, starts Airflow, sends the demo
mix and stops everything it started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.airflow.airflow_home import PROJECT_ROOT


def _clean_env(clone: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "KCBUS_", "PYTEST"))
    }
    env["PYTHONPATH"] = str(clone)
    return env


@pytest.mark.slow
def test_main_job_from_a_clean_checkout_settles_everything_and_reports_the_ledger(
    tmp_path: Path,
) -> None:
    from kcbus.airflow.demo.summary import render, summarize
    from kcbus.ledger import Ledger

    clone = tmp_path / "kcbus"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True,
                   timeout=120)
    result = subprocess.run(
        [sys.executable, "-m", "kcbus", "demo", "--once", "--large-mb", "8", "--timeout", "400"],
        cwd=clone, env=_clean_env(clone), capture_output=True, text=True, timeout=900,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-4000:]
    assert "settled: every message" in out
    assert "UNEXPECTED" not in out
    assert re.search(r"Airflow UI: http://127\.0\.0\.1:\d+ +\(user admin, password \S+", out)

    # The printed summary is exactly what the ledger says.
    with Ledger(f"sqlite:///{clone / 'var' / 'demo' / 'ledger.sqlite'}", migrate=False) as led:
        table = render(summarize(led))
    assert table in out
    for flow in ("entlassbrief", "bauantrag", "tarifdaten", "kommunen"):
        assert re.search(rf"^{flow} +\d+ +\d+", table, re.MULTILINE), flow

    # Everything it started is gone: no process runs in this checkout any more.
    assert _processes_in(clone) == []


def _processes_in(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(int(proc.name))
    return found
