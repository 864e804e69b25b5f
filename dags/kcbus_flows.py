"""kcbus flows: one DAG per route of the route config. Wiring only, no work at parse time.

The config is ``$KCBUS_CONFIG`` (a YAML file or folder), else ``$AIRFLOW_HOME/config``; see
``kcbus.airflow.factory`` for the shape of each DAG and how it is scheduled.
"""

from __future__ import annotations

from kcbus.airflow.factory import flow_dags

globals().update(flow_dags())
