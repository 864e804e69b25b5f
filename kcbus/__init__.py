"""kcbus — the bus runtime: partner/route config, ledger, pipeline, receipts, CLI.

Runs and is testable without Airflow; only ``kcbus.airflow`` imports Airflow.
"""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.1.0"
