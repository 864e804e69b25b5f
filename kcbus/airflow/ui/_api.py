"""The operator's API and page: a FastAPI app that Airflow mounts under ``/kcbus``.

Routes (all JSON unless said; every one needs an Airflow login, see ``_access``):

====  =====================================  ====================================================
GET   ``/ui/``                               the page (HTML; its data comes from the API below)
GET   ``/api/v1/me``                         the caller: user, may edit?, flows, statuses
GET   ``/api/v1/counts``                     counts per time bucket grouped by status, flow,
                                             sender or recipient (the chart)
GET   ``/api/v1/failures``                   REJECTED and DEAD messages with their reason
GET   ``/api/v1/messages``                   search: uuid, sender, recipient, message_type,
                                             flow, status, since, until; or the messages one
                                             task instance handled (dag_id, run_id, task_id,
                                             map_index)
GET   ``/api/v1/messages/{ref}``             one message and its history (timeline)
POST  ``/api/v1/messages/{ref}/resend``      re-send one message            (edit; reason)
POST  ``/api/v1/messages/{ref}/resolve``     mark one message resolved      (edit; reason)
POST  ``/api/v1/resend``                     re-send all matching a filter  (edit; reason)
POST  ``/api/v1/messages/{ref}/content``     the content, full-inspection routes only, when
                                             ``[kcbus] ui_show_content`` is on (edit; reason;
                                             recorded in the message's history)
====  =====================================  ====================================================

Writes take JSON bodies only (FastAPI refuses other content types with 422): a form on
another site cannot post ``application/json`` without a CORS preflight, so the Airflow login
cookie alone never triggers an action (CSRF); every action also needs a reason.

Status codes: 401 no login, 403 not allowed (or content refused), 404 unknown message,
409 too many messages for one bulk action (or an action the ledger refuses), 422 bad
parameters, 503 ledger not configured or unreachable.

Error bodies are ``{"detail": text, "code": code}``: ``code`` is stable (``login-required``,
``forbidden``, ``not-found``, ``too-many-messages``, ``bad-request``, ``not-configured``,
``unavailable``, or the kcbus reason code of a refused action) and the page may branch on it;
``detail`` is for people and carries IDs, counts and partner names only. A server-side error
(configuration, ledger, transport) is answered with a generic text: its own text may name
server paths or URLs, so it goes to the API server's log instead (URLs redacted, no
traceback: a driver's text may quote SQL parameters).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kcbus.airflow.ui._access import Operator, airflow_user
from kcbus.airflow.ui._models import (
    ActionResult,
    Bucket,
    Counts,
    GroupBy,
    Me,
    MessageDetail,
    MessagePage,
    Reason,
    ResendFilter,
)
from kcbus.airflow.ui._settings import UiSettings
from kcbus.airflow.ui._store import MessageFilter, MessageStore, TaskRef
from kcbus.config import redact_urls
from xoev import ConfigurationError, KcbusError, TransientFault

__all__ = ["STATUSES", "ApiError", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

#: Statuses in life-cycle order (DESIGN.md, "Message life cycle").
STATUSES = (
    "RECEIVED", "OPENED", "VALIDATED", "ROUTED", "DELIVERED", "ACKNOWLEDGED",
    "REJECTED", "DUPLICATE", "RETRYING", "DEAD",
)
FAILED = ("REJECTED", "DEAD")
#: A chart never draws more bars than this; a finer bucket over a long range is refused.
MAX_BUCKETS = 1500
#: Searches count at most this many matches (then "more than N").
COUNT_LIMIT = 10_000

# The page is shown in an iframe of the Airflow UI (same origin). Scripts and styles only from
# here; no inline script, so an injected value could never run.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

#: The code of an error body when the raiser named none, by HTTP status.
_CODES = {
    401: "login-required",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    422: "bad-request",
    503: "unavailable",
}
_NOT_CONFIGURED = "kcbus is not configured correctly on the server; the API server's log says why"
_UNAVAILABLE = "the ledger cannot be reached right now; try again in a moment"
_REFUSED = "the ledger refused this action; the API server's log says why"


class ApiError(HTTPException):
    """An HTTP error with a stable ``code`` for the body (see the module docstring)."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code, detail)
        self.code = code


def _error_body(code: str, detail: object) -> dict[str, object]:
    return {"detail": detail, "code": code}


def _public_error(exc: KcbusError) -> tuple[int, str, str]:
    """(status, code, text) the caller sees for a kcbus error."""
    from kcbus._errors import NotFound

    if isinstance(exc, NotFound):
        return status.HTTP_404_NOT_FOUND, "not-found", f"no message {exc.ref} in the ledger"
    if isinstance(exc, ConfigurationError):
        return status.HTTP_503_SERVICE_UNAVAILABLE, "not-configured", _NOT_CONFIGURED
    if isinstance(exc, TransientFault):
        return status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", _UNAVAILABLE
    return status.HTTP_409_CONFLICT, exc.reason_code, _REFUSED


class _LazyStore:
    """Builds the store on first use (the plugin module is imported by every Airflow process,
    the ledger is only needed by the API server), once, thread-safe."""

    def __init__(self, factory: Callable[[], MessageStore]) -> None:
        self._factory = factory
        self._store: MessageStore | None = None
        self._lock = threading.Lock()

    def __call__(self) -> MessageStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._factory()
        return self._store


class _Context:
    """What the routes share: settings (read on first use) and the store (built on first use).
    Kept on ``app.state`` so the dependencies below can be module-level (FastAPI resolves
    annotations from module globals)."""

    def __init__(
        self, settings: UiSettings | None, store: Callable[[], MessageStore] | None
    ) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.store = _LazyStore(store or self._ledger_store)

    @property
    def settings(self) -> UiSettings:
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = UiSettings.from_airflow()
        return self._settings

    def _ledger_store(self) -> MessageStore:
        from kcbus.airflow.ui._ledger_store import LedgerStore

        return LedgerStore.from_settings(self.settings)


def _context(request: Request) -> _Context:
    context: _Context = request.app.state.kcbus
    return context


async def _operator(
    request: Request, user: Annotated[BaseUser, Depends(airflow_user)]
) -> Operator:
    # Built per request: the DAG-id template comes from settings read on first use.
    operator = Operator(user=user, dag_id_template=_context(request).settings.dag_id_template)
    operator.require_read()
    return operator


def _store(request: Request) -> MessageStore:
    # A ConfigurationError (no config, unreadable key file, bad ledger URL) goes to the
    # KcbusError handler: 503 with a generic text, the detail in the server's log.
    return _context(request).store()


OperatorDep = Annotated[Operator, Depends(_operator)]
StoreDep = Annotated[MessageStore, Depends(_store)]


def create_app(
    settings: UiSettings | None = None,
    store: Callable[[], MessageStore] | None = None,
) -> FastAPI:
    """The kcbus operator app. Without arguments, settings come from Airflow's ``[kcbus]``
    section and the ledger store is built on the first request."""
    context = _Context(settings, store)

    def get_settings() -> UiSettings:
        return context.settings

    app = FastAPI(
        title="kcbus operator API",
        description="Messages in the kcbus ledger: counts, failures, search, history, re-send.",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.kcbus = context

    @app.exception_handler(KcbusError)
    async def _kcbus_error(request: Request, exc: KcbusError) -> JSONResponse:
        status_code, code, text = _public_error(exc)
        if status_code != status.HTTP_404_NOT_FOUND:
            # Error texts carry IDs, paths and partners, never content (xoev._errors); URLs
            # may hold credentials, hence redacted. No traceback: a chained driver error may
            # quote SQL parameters.
            cause = exc.__cause__
            log.warning(
                "kcbus operator API: %s %s answered %d %s: %s: %s%s",
                request.method,
                request.url.path,
                status_code,
                code,
                type(exc).__name__,
                redact_urls(str(exc)),
                f" (caused by {type(cause).__name__})" if cause is not None else "",
            )
        return JSONResponse(_error_body(code, text), status_code=status_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.code if isinstance(exc, ApiError) else _CODES.get(exc.status_code, "error")
        return JSONResponse(
            _error_body(code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    # ------------------------------------------------------------------------------- page

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)

    @app.get("/ui", include_in_schema=False)
    def ui_no_slash(request: Request) -> RedirectResponse:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"ui/{query}", status_code=status.HTTP_307_TEMPORARY_REDIRECT)

    @app.get("/ui/", include_in_schema=False)
    def page() -> FileResponse:
        # The page itself holds no data; every number on it comes from the API, which checks
        # the login. An anonymous visitor sees an empty page telling them to log in.
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="kcbus-static")

    # ------------------------------------------------------------------------------- reads

    @app.get("/api/v1/me")
    def me(operator: OperatorDep, store: StoreDep) -> Me:
        return Me(
            user=operator.name,
            can_edit=operator.can_edit(),
            content_flows=sorted(get_settings().content_flows),
            flows=store.flows(),
            statuses=list(STATUSES),
        )

    @app.get("/api/v1/counts")
    def counts(
        operator: OperatorDep,
        store: StoreDep,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: Bucket = "hour",
        group_by: GroupBy = "status",
        flow: str | None = None,
    ) -> Counts:
        until = _aware(until) or datetime.now(UTC)
        since = _aware(since) or until - timedelta(days=1)
        if since >= until:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "since must be before until")
        step = {"minute": 60, "hour": 3600, "day": 86400}[bucket]
        if (until - since).total_seconds() / step > MAX_BUCKETS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                f"more than {MAX_BUCKETS} {bucket} buckets: choose a coarser bucket",
            )
        return store.counts(since=since, until=until, bucket=bucket, group_by=group_by, flow=flow)

    @app.get("/api/v1/failures")
    def failures(
        operator: OperatorDep,
        store: StoreDep,
        flow: str | None = None,
        include_resolved: bool = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> MessagePage:
        where = MessageFilter(flow=flow, statuses=FAILED, include_resolved=include_resolved)
        return store.search(where, limit=limit, offset=offset, count_limit=COUNT_LIMIT)

    @app.get("/api/v1/messages")
    def messages(
        operator: OperatorDep,
        store: StoreDep,
        uuid: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        message_type: str | None = None,
        flow: str | None = None,
        status_: Annotated[list[str] | None, Query(alias="status")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_resolved: bool = True,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int = -1,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> MessagePage:
        task = _task(dag_id, run_id, task_id, map_index)
        where = MessageFilter(
            uuid=_clean(uuid),
            flow=_clean(flow),
            sender=_clean(sender),
            recipient=_clean(recipient),
            message_type=_clean(message_type),
            statuses=_statuses(status_ or []),
            since=_aware(since),
            until=_aware(until),
            include_resolved=include_resolved,
            task=task,
        )
        return store.search(where, limit=limit, offset=offset, count_limit=COUNT_LIMIT)

    @app.get("/api/v1/messages/{ref}")
    def message(ref: str, operator: OperatorDep, store: StoreDep) -> MessageDetail:
        detail = store.detail(ref)
        refusal = _content_refusal(detail.message.inspection, detail.message.flow, operator)
        return detail.model_copy(
            update={"content_viewable": refusal is None, "content_refusal": refusal}
        )

    # ------------------------------------------------------------------------------ writes

    @app.post("/api/v1/messages/{ref}/resend")
    def resend_one(ref: str, body: Reason, operator: OperatorDep, store: StoreDep) -> ActionResult:
        summary = store.summary(ref)
        operator.require_edit([summary.flow])
        return store.resend([summary.ref], actor=operator.name, reason=body.reason)

    @app.post("/api/v1/messages/{ref}/resolve")
    def resolve_one(ref: str, body: Reason, operator: OperatorDep, store: StoreDep) -> ActionResult:
        summary = store.summary(ref)
        operator.require_edit([summary.flow])
        return store.resolve([summary.ref], actor=operator.name, reason=body.reason)

    @app.post("/api/v1/resend")
    def resend_matching(body: ResendFilter, operator: OperatorDep, store: StoreDep) -> ActionResult:
        # Refuse early (before reading anything) when the caller may edit no flow at all...
        operator.require_edit([body.flow])
        where = MessageFilter(
            uuid=_clean(body.uuid),
            flow=_clean(body.flow),
            sender=_clean(body.sender),
            recipient=_clean(body.recipient),
            message_type=_clean(body.message_type),
            statuses=_statuses(body.status),
            since=_aware(body.since),
            until=_aware(body.until),
            include_resolved=body.include_resolved,
            task=_task(body.dag_id, body.run_id, body.task_id, body.map_index),
        )
        page = store.search(where, limit=body.max_messages, offset=0, count_limit=COUNT_LIMIT)
        if page.total > body.max_messages:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                "too-many-messages",
                f"{'more than ' if page.total_capped else ''}{page.total} messages match, "
                f"more than max_messages={body.max_messages}: narrow the filter",
            )
        # ...then check every flow the matching messages belong to, and act on exactly those.
        operator.require_edit({m.flow for m in page.items})
        refs = [f"#{m.ledger_id}" for m in page.items]
        return store.resend(refs, actor=operator.name, reason=body.reason)

    @app.post("/api/v1/messages/{ref}/content", response_class=Response)
    def content(ref: str, body: Reason, operator: OperatorDep, store: StoreDep) -> Response:
        summary = store.summary(ref)
        refusal = _content_refusal(summary.inspection, summary.flow, operator)
        if refusal is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"content not shown: {refusal}")
        data = store.content(f"#{summary.ledger_id}", actor=operator.name, reason=body.reason)
        return Response(data, media_type="application/xml", headers=_NO_STORE)

    def _content_refusal(
        inspection: str | None, flow: str | None, operator: Operator
    ) -> str | None:
        # End-to-end content is sealed for the recipient: never shown, whatever the settings.
        if inspection != "full":
            return "end-to-end"
        if not get_settings().shows_content(flow):
            return "disabled"
        if not operator.can_edit([flow]):
            return "permission"
        return None

    return app


def _task(
    dag_id: str | None, run_id: str | None, task_id: str | None, map_index: int
) -> TaskRef | None:
    if not (dag_id or run_id or task_id):
        return None
    if not (dag_id and run_id and task_id):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "dag_id, run_id and task_id go together"
        )
    return TaskRef(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _aware(moment: datetime | None) -> datetime | None:
    """Times without a zone are UTC (the page always sends UTC)."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _statuses(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().upper()
            if not name:
                continue
            if name not in STATUSES:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_ENTITY,
                    f"unknown status {name!r} (one of {', '.join(STATUSES)})",
                )
            out.append(name)
    return tuple(out)
