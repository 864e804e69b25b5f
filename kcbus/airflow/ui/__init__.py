"""kcbus.airflow.ui — the operator's view: the message ledger inside the Airflow 3 UI.

* :class:`~kcbus.airflow.ui.plugin.KcbusPlugin` (entry point ``airflow.plugins``) mounts the API
  and the page (``/kcbus``) and adds "Messages" to the navigation and to task instances;
* :func:`create_app` builds that FastAPI app (tests build it with their own store);
* :class:`DeadLetterNotifier` mails the DEAD messages of a flow (IDs and reasons only).

Invariant of the whole package: no message content and no personal data in any response,
log or mail, except the one audited content endpoint (full-inspection routes, off by default).
"""

from __future__ import annotations

from kcbus.airflow.ui._api import create_app
from kcbus.airflow.ui._settings import UiSettings

__all__ = ["UiSettings", "create_app"]
