"""The main job ``kcbus demo``: the bus end to end on the embedded default.

Imports no Airflow: it drives Airflow's components as subprocesses (:mod:`.stack`), plays the
demo partners with the real adapters and envelopes, and reads the outcome from the ledger.
"""

from __future__ import annotations

__all__: list[str] = []
