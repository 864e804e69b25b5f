"""How an Airflow task instance names itself as the actor of the ledger events it writes.

The pipeline records an actor with every event (``kcbus.ledger.Ledger.unit(actor=...)``).
When a task passes :func:`task_actor` of its task instance, the operator view can answer
"which messages did this task instance handle?" (the "Messages" tab on a task instance) with an
exact match on the actor; nothing else links Airflow runs to messages (XComs carry only counts).

This module imports nothing from Airflow or the API: task code may import it cheaply.
"""

from __future__ import annotations

__all__ = ["PREFIX", "task_actor"]

#: Every task-instance actor starts with this (other actors: CLI users, operators, workers).
PREFIX = "airflow:"


def task_actor(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """``airflow:<dag_id>/<run_id>/<task_id>``, plus ``[<map_index>]`` for a mapped task.

    >>> task_actor("kcbus_bauantrag", "manual__2026-01-05T10:00:00+00:00", "deliver", 2)
    'airflow:kcbus_bauantrag/manual__2026-01-05T10:00:00+00:00/deliver[2]'
    """
    mapped = f"[{map_index}]" if map_index >= 0 else ""
    return f"{PREFIX}{dag_id}/{run_id}/{task_id}{mapped}"
