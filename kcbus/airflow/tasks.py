"""The work behind a flow DAG's tasks: thin loops over the runtime's batch stages.

Every function here is what one Airflow task does; the DAG factory wraps them in ``@task``.
They import the runtime (``kcbus.pipeline``, ``kcbus.ledger``, the adapters) only when a task
runs, never when a DAG file is parsed, and return only counts and partner IDs (XComs never
carry content or personal data).

Invariants:

* A task drains what is due in batches of the route's ``batch_size`` until a pass makes no
  progress (or ``max_passes`` is reached): one task per stage group, never one per message.
* Every stage is idempotent (the runtime's contract), so a retried or re-run task never
  delivers twice; a task that fails mid-way leaves the ledger consistent and the next run
  continues.
* The ledger records the task instance as the actor (``airflow:<dag>/<run>/<task>[i]``), which
  links each message's history to the Airflow task that moved it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from xoev import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kcbus.airflow.flows import FlowPlan
    from kcbus.bus import Bus
    from kcbus.config import BusConfig
    from kcbus.pipeline import StageCounts

__all__ = ["Intake", "UnknownFlow", "bus", "deliver", "intake", "settle"]


class UnknownFlow(ConfigurationError):
    """A task names a flow that the route config no longer has (config changed under a run)."""

    def __init__(self, flow: str) -> None:
        super().__init__(f"no route {flow!r} in the route config")
        self.flow = flow


_MAX_PASSES = 1000
_BUSES: dict[str, Bus] = {}


def bus(actor: str, path: Path | None = None) -> Bus:
    """The process's :class:`~kcbus.bus.Bus` for this config (built once: schemas, keys,
    ledger, transports), recording ``actor`` with every ledger event from now on."""
    from kcbus.airflow.hook import open_endpoint
    from kcbus.airflow.secrets import keystore_passphrase
    from kcbus.airflow.settings import config_path, load_config
    from kcbus.bus import Bus

    source = str(path or config_path())
    cached = _BUSES.get(source)
    if cached is not None:
        # Same process, next task (dag.test() runs them all in one): keep compiled schemas,
        # keys and connections, record the new task as the actor.
        cached.runtime.actor = actor
        return cached
    config = load_config(Path(source))
    # Endpoints behind an Airflow Connection are opened here; plain URLs by the runtime.
    transports = {
        partner.id: open_endpoint(partner.deliver_to)
        for partner in config.partners.values()
        if partner.deliver_to and partner.deliver_to.lower().startswith("conn://")
    }
    # The keystore passphrase: environment, a secrets file, or Airflow's secrets (see
    # kcbus.airflow.secrets); looked up only when a private key is first needed.
    opened = Bus.open(config, actor=actor, transports=transports,
                      passphrase=keystore_passphrase())
    _BUSES[source] = opened
    return opened


@dataclass(frozen=True)
class Intake:
    """What the intake task hands on: counts, and the destinations with deliveries due."""

    counts: dict[str, int]
    destinations: list[str]


def _drain(stage: Callable[[], StageCounts], total: StageCounts) -> None:
    for _ in range(_MAX_PASSES):
        counts = stage()
        if counts.progress == 0:
            return
        total += counts


def _plan(config: BusConfig, flow: str) -> FlowPlan:
    from kcbus.airflow.flows import flow_plans

    for plan in flow_plans(config):
        if plan.name == flow:
            return plan
    raise UnknownFlow(flow)


def intake(
    flow: str,
    *,
    actor: str,
    path: Path | None = None,
    inline_seconds: float | None = None,
    max_envelopes: int | None = None,
) -> Intake:
    """Receive from the flow's inbound endpoints, open, validate, route and seal; then deliver
    what is due *inline* for up to ``inline_seconds`` (the plan's ``inline_delivery``).

    Inline delivery is the fast path: one task start from arrival to recipient instead of two
    (Airflow pays ~1-2 s per task start). Whatever is still due afterwards — a slow partner,
    a large backlog, retries — is returned and fans out to the mapped per-destination tasks.
    ``max_envelopes`` caps what is received (the benchmark's one-message-per-run baseline).
    """
    from kcbus.airflow.hook import open_endpoint
    from kcbus.pipeline import StageCounts

    the_bus = bus(actor, path)
    plan = _plan(the_bus.config, flow)
    total = StageCounts()
    for url in plan.inbound:
        with open_endpoint(url, max_bytes=the_bus.config.bus.max_inbound_bytes) as transport:
            for _ in range(_MAX_PASSES):
                want = plan.batch_size
                if max_envelopes is not None:
                    want = min(want, max_envelopes - total.received)
                if want <= 0:
                    break
                received = the_bus.receive_batch(transport, want, source=flow)
                total.received += received
                if not received:
                    break
    _drain(partial(the_bus.process_pending, plan.batch_size), total)
    seconds = plan.inline_delivery.total_seconds() if inline_seconds is None else inline_seconds
    deadline = time.monotonic() + seconds
    for _ in range(_MAX_PASSES):
        due = the_bus.due_destinations()
        moved = 0
        for destination in due:
            if time.monotonic() >= deadline:
                break
            counts = the_bus.deliver_counts(destination, plan.batch_size)
            total += counts
            moved += counts.progress
        if not moved or time.monotonic() >= deadline:
            break
    return Intake(total.as_dict(), the_bus.due_destinations())


def deliver(flow: str, destination: str, *, actor: str, path: Path | None = None) -> dict[str, int]:
    """Seal and deliver everything due for one destination (due retries included)."""
    from kcbus.pipeline import StageCounts

    the_bus = bus(actor, path)
    plan = _plan(the_bus.config, flow)
    total = StageCounts()
    _drain(partial(the_bus.deliver_counts, destination, plan.batch_size), total)
    return total.as_dict()


def settle(flow: str, *, actor: str, path: Path | None = None) -> dict[str, int]:
    """Deliver what the deliveries produced (receipts to the senders) until nothing is due."""
    from kcbus.pipeline import StageCounts

    the_bus = bus(actor, path)
    plan = _plan(the_bus.config, flow)
    total = StageCounts()
    for _ in range(_MAX_PASSES):
        before = total.progress
        for destination in the_bus.due_destinations():
            _drain(partial(the_bus.deliver_counts, destination, plan.batch_size), total)
        if total.progress == before:
            break
    return total.as_dict()
