"""The operator view's queries give the same answers on SQLite (embedded) and on a real
PostgreSQL server (production): chart buckets, filters, task-instance links, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kcbus.airflow.ui._ledger_store import LedgerStore
from kcbus.airflow.ui._store import MessageFilter, TaskRef
from kcbus.airflow.ui.actor import task_actor
from kcbus.ledger import Ledger, Status
from tests.airflow.ui._ledger_data import write_message

pytestmark = pytest.mark.real


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    ledger = Ledger(url, keys=tmp_path / "ledger.keys")
    try:
        yield LedgerStore(ledger)
    finally:
        ledger.close()


T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_counts_fill_every_bucket_in_life_cycle_order(store: LedgerStore) -> None:
    for minutes, final in [(5, Status.DEAD), (15, Status.DELIVERED), (70, Status.REJECTED),
                           (190, Status.DELIVERED), (190, Status.ACKNOWLEDGED)]:
        write_message(store.ledger, route="bauantrag", sender="gemeinde", recipients=["lra"],
                      final=final, received_at=T0 + timedelta(minutes=minutes))
    # A message outside the range is not counted.
    write_message(store.ledger, route="bauantrag", sender="gemeinde", recipients=["lra"],
                  final=Status.DELIVERED, received_at=T0 - timedelta(hours=1))
    counts = store.counts(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=4),
                          bucket="hour", group_by="status", flow=None)
    # The range starts on a whole hour, so the bars line up with the clock.
    assert counts.since == T0
    assert counts.buckets == [T0 + timedelta(hours=h) for h in range(4)]
    assert [(s.key, s.counts) for s in counts.series] == [
        ("DELIVERED", [1, 0, 0, 1]),
        ("ACKNOWLEDGED", [0, 0, 0, 1]),
        ("REJECTED", [0, 1, 0, 0]),
        ("DEAD", [1, 0, 0, 0]),
    ]
    by_flow = store.counts(since=T0, until=T0 + timedelta(days=1), bucket="day",
                           group_by="flow", flow="bauantrag")
    # Day buckets start at midnight UTC: 07:00 belongs to the first day as well.
    assert [(s.key, s.counts) for s in by_flow.series] == [("bauantrag", [6, 0])]


def test_search_filters_and_counts(store: LedgerStore) -> None:
    a = write_message(store.ledger, route="bauantrag", sender="gemeinde", recipients=["lra"],
                      final=Status.DEAD, received_at=T0)
    b = write_message(store.ledger, route="kommunen", sender="lra", recipients=["gemeinde"],
                      final=Status.DELIVERED, received_at=T0 + timedelta(hours=1),
                      message_type="kommunal.mitteilung.0100")
    page = store.search(MessageFilter(), limit=1, offset=0, count_limit=100)
    assert page.total == 2 and [m.uuid for m in page.items] == [b.uuid]
    assert store.flows() == ["bauantrag", "kommunen"]

    def uuids(where: MessageFilter) -> list[str | None]:
        return [m.uuid for m in store.search(where, limit=10, offset=0, count_limit=100).items]

    assert uuids(MessageFilter(uuid=a.uuid.upper())) == [a.uuid]
    assert uuids(MessageFilter(recipient="gemeinde")) == [b.uuid]
    assert uuids(MessageFilter(message_type="kommunal.*")) == [b.uuid]
    assert uuids(MessageFilter(statuses=("DEAD",), flow="bauantrag")) == [a.uuid]
    assert uuids(MessageFilter(since=T0 + timedelta(minutes=30))) == [b.uuid]
    capped = store.search(MessageFilter(), limit=10, offset=0, count_limit=1)
    assert capped.total == 1 and capped.total_capped


def test_messages_by_task_instance(store: LedgerStore) -> None:
    actor = task_actor("kcbus_bauantrag", "scheduled__2026-11-20", "deliver", 3)
    mine = write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                         final=Status.DELIVERED, actor=actor)
    write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                  final=Status.DELIVERED)
    task = TaskRef("kcbus_bauantrag", "scheduled__2026-11-20", "deliver", 3)
    page = store.search(MessageFilter(task=task), limit=10, offset=0, count_limit=100)
    assert [m.uuid for m in page.items] == [mine.uuid]
    other = TaskRef("kcbus_bauantrag", "scheduled__2026-11-20", "deliver", 4)
    assert store.search(MessageFilter(task=other), limit=10, offset=0, count_limit=100).total == 0


def test_dead_between_takes_the_time_of_the_dead_transition(store: LedgerStore) -> None:
    early = write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                          final=Status.DEAD, received_at=T0)
    late = write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                         final=Status.DEAD, received_at=T0 + timedelta(hours=2))
    found = store.dead_between("bauantrag", since=T0 + timedelta(hours=1),
                               until=T0 + timedelta(hours=3))
    assert [m.uuid for m in found] == [late.uuid]
    assert early.uuid not in {m.uuid for m in store.dead_between(
        "kommunen", since=T0, until=T0 + timedelta(hours=3))}


def test_task_instances_with_the_longest_ids_airflow_allows_list_their_messages(
    store: LedgerStore,
) -> None:
    # dag_id, run_id and task_id may each be 250 characters: the actor is longer than the
    # ledger's actor column, which clips it the same way where it writes and where it looks.
    dag, run, task_id = "kcbus_" + "d" * 244, "manual__" + "r" * 242, "deliver_" + "t" * 242
    mine = write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                         final=Status.DELIVERED, actor=task_actor(dag, run, task_id, 12))
    write_message(store.ledger, route="bauantrag", sender="g", recipients=["l"],
                  final=Status.DELIVERED, actor=task_actor(dag, run, task_id, 13))
    page = store.search(MessageFilter(task=TaskRef(dag, run, task_id, 12)), limit=10, offset=0,
                        count_limit=100)
    assert [m.uuid for m in page.items] == [mine.uuid] and page.total == 1
    (actor,) = {e.actor or "" for e in store.detail(mine.uuid).events}
    assert actor.startswith("airflow:kcbus_ddd") and actor.endswith("ttt[12]")


def test_messages_whose_id_is_no_uuid_open_by_their_id(store: LedgerStore) -> None:
    # An XJustiz eigeneNachrichtenID may be digits only: it is the message's ID, not a ledger ID.
    for message_id in ("1.2.276.0.76.4.17.9814184919^a1", "20261120000042"):
        written = write_message(store.ledger, route="entlassbrief", sender="klinikum",
                                recipients=["praxis"], final=Status.ACKNOWLEDGED,
                                uuid=message_id)
        assert store.summary(message_id).ledger_id == written.ledger_id
        detail = store.detail(message_id)
        assert detail.message.uuid == message_id and detail.message.ref == f"#{written.ledger_id}"
