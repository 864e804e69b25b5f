"""kcbus.airflow — the only package besides dags/ that imports Airflow."""

from __future__ import annotations

__all__: list[str] = []
