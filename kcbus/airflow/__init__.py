"""kcbus.airflow — the only package besides dags/ that imports Airflow.

* :func:`flow_dags` / :func:`build_flow_dag` — one DAG per route of the config (``factory``);
* :class:`KcbusTransportHook` — an Airflow Connection → a kcbus transport adapter (``hook``);
* :class:`DropFolderTrigger`, :class:`KombuQueueTrigger` — event triggers for
  ``AssetWatcher`` on inbound drop folders and kombu/AMQP queues (``triggers``);
* :func:`flow_plans` — what each flow watches, polls and how often (``flows``, no Airflow);
* ``provider.get_provider_info`` — registered through the ``apache_airflow_provider`` entry
  point; ``demo`` — the main job ``kcbus demo``; ``ui`` — the operator view plugin.

Exports load lazily: Airflow imports ``kcbus.airflow.provider`` in every component and a task
process imports only what it runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kcbus.airflow.factory import build_flow_dag, flow_dags
    from kcbus.airflow.flows import FlowPlan, flow_plans
    from kcbus.airflow.hook import KcbusTransportHook, TransportSettings
    from kcbus.airflow.triggers import DropFolderTrigger, KombuQueueTrigger

__all__ = [
    "DropFolderTrigger",
    "FlowPlan",
    "KcbusTransportHook",
    "KombuQueueTrigger",
    "TransportSettings",
    "build_flow_dag",
    "flow_dags",
    "flow_plans",
]

_WHERE = {
    "build_flow_dag": "kcbus.airflow.factory",
    "flow_dags": "kcbus.airflow.factory",
    "FlowPlan": "kcbus.airflow.flows",
    "flow_plans": "kcbus.airflow.flows",
    "KcbusTransportHook": "kcbus.airflow.hook",
    "TransportSettings": "kcbus.airflow.hook",
    "DropFolderTrigger": "kcbus.airflow.triggers",
    "KombuQueueTrigger": "kcbus.airflow.triggers",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kcbus.airflow' has no attribute {name!r}")
    return getattr(import_module(module), name)
