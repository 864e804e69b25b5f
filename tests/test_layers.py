"""Imports only point down: dags/ -> kcbus/airflow/ -> kcbus/ -> adapters/ -> xoev/.

Only dags/ and kcbus/airflow/ may import Airflow; xoev/ stays sans-IO (no sockets, no kombu,
no HTTP/SSH clients, no database).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# For each layer: the top-level packages it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "xoev": {"kcbus", "adapters", "dags", "airflow", "kombu", "socket", "httpx", "paramiko",
             "sqlalchemy", "requests", "urllib.request", "http.client", "ssl", "asyncio"},
    "adapters": {"kcbus", "dags", "airflow"},
    "kcbus": {"dags", "airflow", "kcbus.airflow"},
}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(layer: str) -> list[str]:
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if layer == "kcbus" and rel.parts[:2] == ("kcbus", "airflow"):
            continue  # the one Airflow-aware package inside kcbus/
        for module in _imported_modules(path):
            for banned in FORBIDDEN[layer]:
                if module == banned or module.startswith(banned + "."):
                    found.append(f"{rel}: imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer: str) -> None:
    assert _violations(layer) == []


def test_layer_check_sees_a_violation(tmp_path: Path) -> None:
    # The scanner must notice an upward import (guards against a check that passes vacuously).
    bad = tmp_path / "m.py"
    bad.write_text("from kcbus.ledger import Ledger\nimport airflow.sdk\n")
    assert _imported_modules(bad) == {"kcbus.ledger", "airflow.sdk"}
