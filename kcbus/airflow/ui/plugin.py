"""The kcbus Airflow plugin: the operator's message view inside the Airflow 3 UI.

Registered through the ``airflow.plugins`` entry point (``pyproject.toml``). It adds

* a FastAPI app under ``/kcbus`` (``fastapi_apps``): the JSON API ``/kcbus/api/v1/...`` over
  the ledger and the page ``/kcbus/ui/`` that uses it, both behind Airflow's auth manager;
* two ``external_views``: "Messages" in the navigation (top level), and a "Messages" tab on
  every task instance, which opens the page filtered to the messages that task instance handled
  (Airflow fills in ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}``, ``{MAP_INDEX}``).

Airflow imports this module in every process that loads plugins — every task process too (for
macros) — so it must stay light: the FastAPI app (FastAPI, pydantic models, the ledger code) is
built only when the API server asks the plugin instance for ``fastapi_apps``; nothing reaches
the ledger until the first request.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["KcbusPlugin"]

URL_PREFIX = "/kcbus"

_ICON = "/kcbus/ui/static/icon.svg"


_app: list[FastAPI] = []
_lock = threading.Lock()


def _the_app() -> FastAPI:
    """One app per process, built on first use (imports FastAPI and the ledger code)."""
    with _lock:
        if not _app:
            from kcbus.airflow.ui._api import create_app

            _app.append(create_app())
        return _app[0]


class KcbusPlugin(AirflowPlugin):
    name = "kcbus"

    # Airflow reads ``fastapi_apps`` from the plugin *instance* (entry-point plugins are
    # instantiated), only in the API server: a property keeps task processes from building
    # the app. Overriding the base class's list attribute with a property is deliberate.
    @property
    def fastapi_apps(self) -> list[dict[str, object]]:  # type: ignore[override]
        return [{"app": _the_app(), "url_prefix": URL_PREFIX, "name": "kcbus operator view"}]

    external_views = [  # noqa: RUF012 (Airflow's plugin API: class attributes)
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
