"""kcbus.airflow.ui — the operator's view: the message ledger inside the Airflow 3 UI.

* ``plugin.KcbusPlugin`` (entry point ``airflow.plugins``) mounts the API and the page under
  ``/kcbus`` and adds "Messages" to the navigation and to every task instance;
* :func:`create_app` builds that FastAPI app (see ``_api`` for the routes);
* :class:`DeadLetterNotifier` mails the DEAD messages of a flow (IDs and reasons only);
* :func:`task_actor` is the actor name tasks give the ledger so a task instance's "Messages"
  tab finds what it handled.

Invariant of the whole package: no message content and no personal data in any response,
log or mail, except the one audited content endpoint (full-inspection routes, off by default).

Exports are loaded lazily: DAG files and task processes import ``task_actor`` or the notifier
without paying for FastAPI and the API models.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kcbus.airflow.ui._api import create_app
    from kcbus.airflow.ui._settings import UiSettings
    from kcbus.airflow.ui.actor import task_actor
    from kcbus.airflow.ui.alerts import DeadLetterNotifier

__all__ = ["DeadLetterNotifier", "UiSettings", "create_app", "task_actor"]

_WHERE = {
    "DeadLetterNotifier": "kcbus.airflow.ui.alerts",
    "UiSettings": "kcbus.airflow.ui._settings",
    "create_app": "kcbus.airflow.ui._api",
    "task_actor": "kcbus.airflow.ui.actor",
}


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
