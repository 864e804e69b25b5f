"""Who may do what in the operator's view: Airflow's auth manager decides, kcbus only asks.

Rules (issue 7; Airflow 3 auth manager API, ``airflow.api_fastapi.auth.managers``):

* Identity is Airflow's: the JWT in ``Authorization: Bearer`` or the UI's ``_token`` cookie,
  resolved by Airflow's own ``get_user`` dependency. No token, no answer (401); a bad token 403.
* **read** (counts, failures, search, history) needs ``is_authorized_custom_view(GET,
  "kcbus-messages")``.
* **edit** (re-send, mark resolved, and looking at content where that is enabled) needs
  ``is_authorized_custom_view(PUT, "kcbus-messages")`` *and*, for every flow the action touches,
  ``is_authorized_dag(PUT, RUN, DagDetails(id=<the flow's DAG>))``. Re-sending makes the flow's
  DAG do work again, so whoever may not touch that DAG's runs may not re-send its messages. The
  DAG check also matters in practice: the SimpleAuthManager ignores the method for custom views
  (any viewer passes), and only the DAG check keeps a viewer from re-sending.

Nothing here imports Airflow's API server modules at import time: the plugin module is loaded
by every task process (macros), and those imports cost more than a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["RESOURCE_NAME", "Operator", "airflow_user"]

#: Name of the custom view in the auth manager (FAB shows it as a resource to grant).
RESOURCE_NAME = "kcbus-messages"

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Operator:
    """The Airflow user behind a request, with the questions the API asks the auth manager."""

    user: BaseUser
    dag_id_template: str

    @property
    def name(self) -> str:
        """The Airflow user name, recorded in the ledger with every action."""
        return str(self.user.get_name())

    def can_read(self) -> bool:
        from airflow.api_fastapi.app import get_auth_manager

        return bool(
            get_auth_manager().is_authorized_custom_view(
                method="GET", resource_name=RESOURCE_NAME, user=self.user
            )
        )

    def can_edit(self, flows: Iterable[str | None] = (None,)) -> bool:
        """May this user re-send / resolve messages of all these flows (``None``: any flow)?"""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import (
            DagAccessEntity,
            DagDetails,
        )

        manager = get_auth_manager()
        if not manager.is_authorized_custom_view(
            method="PUT", resource_name=RESOURCE_NAME, user=self.user
        ):
            return False
        for flow in set(flows) or {None}:
            dag_id = self.dag_id_template.format(flow=flow) if flow else None
            if not manager.is_authorized_dag(
                method="PUT",
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id),
                user=self.user,
            ):
                return False
        return True

    def require_read(self) -> None:
        if not self.can_read():
            raise HTTPException(status.HTTP_403_FORBIDDEN, "read access to kcbus messages needed")

    def require_edit(self, flows: Iterable[str | None] = (None,)) -> None:
        if not self.can_edit(flows):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "edit access to this flow needed")


async def airflow_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> BaseUser:
    """FastAPI dependency: the logged-in Airflow user; 401 without a login, 403 for a bad token."""
    # Airflow's own resolution (bearer first, then the cookie the refresh middleware vetted);
    # imported here, not at module level, to keep task processes light (see module docstring).
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, credentials)
