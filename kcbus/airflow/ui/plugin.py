"""The kcbus Airflow plugin: the operator's message view inside the Airflow 3 UI.

Registered through the ``airflow.plugins`` entry point (``pyproject.toml``). It adds

* a FastAPI app under ``/kcbus`` (``fastapi_apps``): the JSON API ``/kcbus/api/v1/...`` over
  the ledger and the page ``/kcbus/ui/`` that uses it, both behind Airflow's auth manager;
* two ``external_views``: "Messages" in the navigation (top level), and a "Messages" tab on
  every task instance, which opens the page filtered to the messages that task instance handled
  (Airflow fills in ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}``, ``{MAP_INDEX}``).

Airflow imports this module in every process that loads plugins, task processes included, so
it must stay light: the app is built here, but nothing reaches the ledger or Airflow's API
server modules until the first request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from kcbus.airflow.ui._api import create_app

__all__ = ["KcbusPlugin"]

URL_PREFIX = "/kcbus"

_ICON = "/kcbus/ui/static/icon.svg"


class KcbusPlugin(AirflowPlugin):
    name = "kcbus"
    fastapi_apps = [  # noqa: RUF012 (Airflow's plugin API: class attributes)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "kcbus operator view"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Messages",
            "href": f"{URL_PREFIX}/ui/",
            "url_route": "kcbus-messages",
            # No category: a top-level entry of the navigation, where operators look first.
            "destination": "nav",
            "icon": _ICON,
        },
        {
            "name": "Messages",
            "href": (
                f"{URL_PREFIX}/ui/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"
                "&task_id={TASK_ID}&map_index={MAP_INDEX}"
            ),
            "url_route": "kcbus-task-messages",
            "destination": "task_instance",
            "icon": _ICON,
        },
    ]
