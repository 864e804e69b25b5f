"""From the route config to flow plans: what each flow's DAG watches, how often, how hard.

Pure (no Airflow import): :func:`flow_plans` turns a :class:`~kcbus.config.BusConfig` into one
:class:`FlowPlan` per route; :mod:`kcbus.airflow.factory` turns plans into DAGs.

Rules:

* A flow drains the inbound endpoints of its senders (``partner.receive_from``), or the bus's
  shared inbox (``bus.inbound``) for senders without their own (and for routes that name no
  senders). Endpoints shared by several flows are drained by whichever flow runs first; the
  pipeline routes every message by its header, so nothing depends on which run picked it up.
* *Event* sources: local drop folders (``file://``), watched by a
  :class:`~kcbus.airflow.triggers.DropFolderTrigger`, and kombu queues (``amqp://``,
  ``amqps://``, ``kombu+memory://``, ``kombu+filesystem://``, ``conn://`` with an ``inbox``),
  watched by a :class:`~kcbus.airflow.triggers.KombuQueueTrigger`. Every other endpoint (SFTP,
  HTTPS, the in-process twin) is *polled* on a short schedule (``POLL_EVERY``).
* A route with ``schedule`` (cron or preset) runs on that schedule only (scheduled batch).
* Event-driven flows also run every ``sweep`` (the route's retry backoff, 2 to 15 minutes):
  messages waiting for their next delivery attempt are picked up even when nothing new
  arrives. A sweep that finds nothing costs one task start (the rest of the run is skipped).
* Credentials never reach a trigger (it is serialized into the DAG): an endpoint that needs a
  password is written ``conn://<conn_id>?inbox=...`` and an Airflow Connection holds its URL
  and credentials (see :mod:`kcbus.airflow.endpoints`). A ``amqp://`` URL with a password in
  the config is polled instead of watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

from kcbus.config import BusConfig, Route

__all__ = [
    "INLINE_DELIVERY",
    "POLL_EVERY",
    "EventSource",
    "FlowPlan",
    "event_source",
    "flow_plans",
    "kombu_source",
]

#: Default time the intake task spends delivering inline (see FlowPlan.inline_delivery).
INLINE_DELIVERY = timedelta(seconds=5)
#: How often flows with polled endpoints (file drop, SFTP, HTTPS inbox) look for new envelopes.
POLL_EVERY = timedelta(seconds=30)
_MIN_SWEEP = timedelta(minutes=2)
_MAX_SWEEP = timedelta(minutes=15)
_KOMBU = {"amqp": "amqp", "amqps": "amqps", "kombu+memory": "memory",
          "kombu+filesystem": "filesystem"}


@dataclass(frozen=True)
class EventSource:
    """An inbound queue to watch: a kombu queue (``queue`` on ``broker_url`` or ``conn_id``,
    for :class:`KombuQueueTrigger`) or a local drop ``folder`` (for
    :class:`DropFolderTrigger`). Never holds credentials."""

    broker_url: str | None = None
    conn_id: str | None = None
    queue: str | None = None
    transport_options: tuple[tuple[str, str], ...] = ()
    folder: str | None = None

    @property
    def key(self) -> str:
        """Stable identity for asset/watch names."""
        if self.folder is not None:
            return f"folder|{self.folder}"
        where = self.conn_id or self.broker_url or ""
        options = ",".join(f"{k}={v}" for k, v in self.transport_options)
        return f"{where}|{options}|{self.queue}"

    @property
    def label(self) -> str:
        """Short readable name (queue name, or the folder's last part)."""
        if self.folder is not None:
            return self.folder.rstrip("/").rsplit("/", 1)[-1]
        return self.queue or "inbound"


@dataclass(frozen=True)
class FlowPlan:
    """Everything the DAG factory needs for one flow (one route)."""

    name: str
    description: str
    #: Cron/preset of a scheduled batch flow; ``None`` for event-driven flows.
    cron: str | None
    events: tuple[EventSource, ...]
    polled: tuple[str, ...]
    inbound: tuple[str, ...]
    #: Static destinations (partner IDs) from the route; "leser" ones are known only at run time.
    destinations: tuple[str, ...]
    batch_size: int
    sweep: timedelta
    end_to_end: bool
    #: Airflow task retries for failures of the machinery itself (ledger down, broker gone);
    #: message-level retries are the runtime's (route retry policy, RETRYING → DEAD).
    task_retries: int
    task_retry_delay: timedelta
    task_timeout: timedelta
    #: How long the intake task goes on delivering itself before it leaves the rest to the
    #: mapped per-destination tasks (the fast path: one task start from arrival to recipient).
    inline_delivery: timedelta = INLINE_DELIVERY

    @property
    def dag_id(self) -> str:
        return f"kcbus_{self.name.replace('-', '_')}"


def event_source(url: str) -> EventSource | None:
    """What to watch for an inbound endpoint URL, or ``None`` if it can only be polled."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
        return EventSource(folder=unquote(parts.path))
    return kombu_source(url)


def kombu_source(url: str) -> EventSource | None:
    """The queue an inbound kombu endpoint URL consumes, or ``None`` if it is not one.

    Mirrors :mod:`adapters.transport.amqp`: queue ``<exchange>.<inbox>``; for
    ``kombu+filesystem:///folder`` the broker folder is ``<folder>/queue``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    inbox = query.get("inbox")
    if not inbox:
        return None
    exchange = query.get("exchange", "kcbus")
    queue = f"{exchange}.{inbox}"
    if scheme == "conn":
        return EventSource(broker_url=None, conn_id=parts.netloc, queue=queue)
    if scheme not in _KOMBU:
        return None
    kombu_scheme = _KOMBU[scheme]
    if kombu_scheme == "filesystem":
        folder = unquote(parts.path).rstrip("/") + "/queue"
        return EventSource(
            broker_url="filesystem://", conn_id=None, queue=queue,
            transport_options=(("data_folder_in", folder), ("data_folder_out", folder)),
        )
    if parts.password or parts.username:
        # Never serialize a password into a trigger (nor a user name alone: a bearer token
        # can travel as one): such endpoints go through a Connection or are polled.
        return None
    netloc = parts.netloc
    return EventSource(broker_url=f"{kombu_scheme}://{netloc}{parts.path or '/'}",
                       conn_id=None, queue=queue)


def _inbound(config: BusConfig, route: Route) -> tuple[str, ...]:
    # A route without named senders takes messages from every partner that may send anything.
    senders = route.match.senders or tuple(p.id for p in config.partners.values() if p.may_send)
    urls: list[str] = []
    shared_needed = not route.match.senders
    for sender in senders:
        partner = config.partners[sender]
        if partner.receive_from:
            if partner.receive_from not in urls:
                urls.append(partner.receive_from)
        else:
            shared_needed = True
    if shared_needed:
        urls.extend(u for u in config.bus.inbound if u not in urls)
    return tuple(urls)


def flow_plans(config: BusConfig) -> list[FlowPlan]:
    """One plan per route, in config order."""
    plans = []
    for route in config.routes.values():
        inbound = _inbound(config, route)
        events: list[EventSource] = []
        polled: list[str] = []
        for url in inbound:
            source = event_source(url)
            if source is not None:
                events.append(source)
            else:
                polled.append(url)
        backoff = route.retry.backoff
        sweep = min(max(backoff, _MIN_SWEEP), _MAX_SWEEP)
        large = route.batch_size <= 100 or route.schedule is not None
        plans.append(
            FlowPlan(
                name=route.name,
                description=route.description,
                cron=route.schedule,
                events=tuple(events),
                polled=tuple(polled),
                inbound=inbound,
                destinations=tuple(t for t in route.to if t != "leser"),
                batch_size=route.batch_size,
                sweep=sweep,
                end_to_end=route.end_to_end,
                task_retries=3,
                task_retry_delay=min(max(backoff, timedelta(seconds=10)), timedelta(minutes=5)),
                # Large documents (plans, tariff publications) get more time per batch.
                task_timeout=timedelta(minutes=60 if large else 15),
            )
        )
    return plans
