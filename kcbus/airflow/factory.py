"""The DAG factory: one Airflow DAG per flow (route), generated from the route config.

``dags/kcbus_flows.py`` only calls :func:`flow_dags`. Each flow DAG ``kcbus_<route>`` is::

    intake  ──►  deliver[<destination>] (mapped, one per destination still due)  ──►  settle

* ``intake`` drains the flow's inbound endpoints and opens, validates, routes and seals in
  batches, then delivers inline for a few seconds (``FlowPlan.inline_delivery``: arrival to
  recipient in one task start); it returns the destinations still due and pushes its counts
  (XCom ``counts``): partner IDs and numbers only.
* ``deliver`` is mapped over those destinations, labelled ``to <partner>`` in the UI
  (``map_index_template``): a slow or failing partner never holds up the others, and a large
  backlog is shared out over parallel tasks. Nothing due: the mapping is empty (skipped).
* ``settle`` delivers what the deliveries produced (receipts to the senders); skipped with
  them.

Scheduling (see :mod:`kcbus.airflow.flows`): event-driven flows are scheduled on one asset per
inbound drop folder or queue, each watched by a
:class:`~kcbus.airflow.triggers.DropFolderTrigger` or
:class:`~kcbus.airflow.triggers.KombuQueueTrigger` (``AssetWatcher``), or-ed with a time
schedule (polled endpoints every ``POLL_EVERY``, or the
retry sweep); scheduled batch flows run on their cron. ``max_active_runs=1``: events arriving
during a run merge into one follow-up run, which drains whatever is pending.

Parse cost: this module imports the Airflow SDK, the (small) route config loader and the
trigger class; the runtime, the ledger and the adapters are imported inside the tasks.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import DAG, Asset, AssetWatcher, Param, task
from airflow.sdk.definitions.asset import AssetAny
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable, DeltaTriggerTimetable

from kcbus.airflow.flows import POLL_EVERY, EventSource, FlowPlan, flow_plans
from kcbus.airflow.settings import config_path, load_config
from kcbus.airflow.triggers import DropFolderTrigger, KombuQueueTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.timetable import BaseTimetable
    from airflow.triggers.base import BaseEventTrigger

__all__ = ["ALERTS_ENV", "TIMEZONE", "build_flow_dag", "flow_dags", "inbound_asset"]

#: Cron schedules of batch flows are read in the district's local time.
TIMEZONE = "Europe/Berlin"
#: Comma-separated mail addresses for DEAD-message alerts (Airflow's SMTP settings); unset: none.
ALERTS_ENV = "KCBUS_ALERTS_TO"
_START = datetime(2025, 1, 1, tzinfo=UTC)


def inbound_asset(source: EventSource) -> Asset:
    """The asset standing for one inbound queue or drop folder, watched by its trigger.

    Flows sharing an inbound endpoint share the asset (same name and URI, same trigger), so
    one arrival schedules each of them once.
    """
    digest = hashlib.sha256(source.key.encode()).hexdigest()[:10]
    trigger: BaseEventTrigger
    if source.folder is not None:
        trigger = DropFolderTrigger(folders=[source.folder])
    else:
        assert source.queue is not None
        trigger = KombuQueueTrigger(
            queues=[source.queue],
            broker_url=source.broker_url,
            conn_id=source.conn_id,
            transport_options=dict(source.transport_options),
        )
    label = source.label
    return Asset(
        name=f"kcbus-inbound-{label}-{digest}",
        uri=f"kcbus://inbound/{digest}/{label}",
        group="kcbus",
        watchers=[AssetWatcher(name=f"kcbus-watch-{label}-{digest}", trigger=trigger)],
    )


def _schedule(plan: FlowPlan) -> BaseTimetable | str:
    if plan.cron is not None:
        if plan.cron.startswith("@"):
            return plan.cron
        return CronTriggerTimetable(plan.cron, timezone=TIMEZONE)
    every = POLL_EVERY if plan.polled else plan.sweep
    clock = DeltaTriggerTimetable(every)
    if not plan.events:
        return clock
    assets = [inbound_asset(source) for source in plan.events]
    return AssetOrTimeSchedule(timetable=clock, assets=AssetAny(*assets))


def _actor(context: Context) -> str:
    from kcbus.airflow.ui.actor import task_actor

    ti = context["ti"]
    index = -1 if ti.map_index is None else ti.map_index
    return task_actor(ti.dag_id, ti.run_id, ti.task_id, index)


def _doc(plan: FlowPlan) -> str:
    mode = "end-to-end (the bus sees only the routing label)" if plan.end_to_end else "full"
    how = f"cron `{plan.cron}` ({TIMEZONE})" if plan.cron else (
        f"event-driven on {len(plan.events)} queue(s)"
        + (f", polling {len(plan.polled)} endpoint(s) every {POLL_EVERY}" if plan.polled else "")
        + f", sweep every {plan.sweep}"
    )
    targets = ", ".join(plan.destinations) or "the readers named in each message"
    return (
        f"### kcbus flow `{plan.name}`\n\n{plan.description}\n\n"
        f"* inspection: {mode}\n* schedule: {how}\n* destinations: {targets}\n"
        f"* batch size: {plan.batch_size}\n\n"
        "Messages of this flow: the **Messages** page of the kcbus plugin."
    )


def _callbacks(plan: FlowPlan) -> dict[str, object]:
    import os

    to = [a.strip() for a in os.environ.get(ALERTS_ENV, "").split(",") if a.strip()]
    if not to:
        return {}
    from kcbus.airflow.ui.alerts import DeadLetterNotifier

    # A delivery that spends its retry budget marks the message DEAD without failing the task,
    # so successful runs report too (see DeadLetterNotifier).
    notifier = DeadLetterNotifier(flow=plan.name, to=to)
    return {"on_failure_callback": notifier, "on_success_callback": notifier}


_PLAN_SCHEDULE = object()


def build_flow_dag(
    plan: FlowPlan,
    *,
    config: Path | None = None,
    dag_id: str | None = None,
    schedule: object = _PLAN_SCHEDULE,
    max_envelopes: int | None = None,
) -> DAG:
    """The DAG of one flow. ``config`` is the route config the tasks load (default: env).

    ``dag_id``, ``schedule`` and ``max_envelopes`` (a cap on what one run receives) exist for
    the benchmark's baseline, the naive one-run-per-message DAG; flows use the plan's.
    """
    source = str(config) if config is not None else None
    flow = plan.name

    dag = DAG(
        dag_id=dag_id or plan.dag_id,
        description=(plan.description or f"kcbus flow {flow}")[:200],
        doc_md=_doc(plan),
        schedule=_schedule(plan) if schedule is _PLAN_SCHEDULE else schedule,
        params={
            "inline_seconds": Param(
                plan.inline_delivery.total_seconds(), type="number", minimum=0,
                description="seconds intake delivers itself before fanning out (0: always "
                "fan out to the per-destination tasks)",
            ),
        },
        start_date=_START,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        dagrun_timeout=plan.task_timeout * 3,
        tags=["kcbus", f"flow:{flow}", "end-to-end" if plan.end_to_end else "full-inspection"],
        default_args={
            "owner": "kcbus",
            "retries": plan.task_retries,
            "retry_delay": plan.task_retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=30),
            "execution_timeout": plan.task_timeout,
        },
        **_callbacks(plan),  # type: ignore[arg-type]
    )

    with dag:

        @task(task_id="intake")
        def intake_task() -> list[str]:
            """Receive, open, validate, route; returns the destinations with work due."""
            from airflow.sdk import get_current_context

            from kcbus.airflow import tasks

            context = get_current_context()
            path = Path(source) if source else None
            inline = float(context["params"].get("inline_seconds", 0.0))
            result = tasks.intake(flow, actor=_actor(context), path=path,
                                  inline_seconds=inline, max_envelopes=max_envelopes)
            context["ti"].xcom_push(key="counts", value=result.counts)
            return result.destinations

        @task(task_id="deliver", map_index_template="to {{ task.op_kwargs['destination'] }}")
        def deliver_task(destination: str) -> dict[str, int]:
            from airflow.sdk import get_current_context

            from kcbus.airflow import tasks

            path = Path(source) if source else None
            actor = _actor(get_current_context())
            return tasks.deliver(flow, destination, actor=actor, path=path)

        # Runs after deliveries (the receipts they produce); skipped when nothing was due.
        @task(task_id="settle", trigger_rule="none_failed_min_one_success")
        def settle_task() -> dict[str, int]:
            from airflow.sdk import get_current_context

            from kcbus.airflow import tasks

            path = Path(source) if source else None
            return tasks.settle(flow, actor=_actor(get_current_context()), path=path)

        delivered = deliver_task.expand(destination=intake_task())
        delivered >> settle_task()

    return dag


def flow_dags(config: Path | None = None) -> dict[str, DAG]:
    """Every flow DAG of the route config (``KCBUS_CONFIG``, else ``$AIRFLOW_HOME/config``)."""
    path = config or config_path()
    plans = flow_plans(load_config(path))
    return {plan.dag_id: build_flow_dag(plan, config=config) for plan in plans}
