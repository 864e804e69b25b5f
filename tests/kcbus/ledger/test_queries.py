"""The ledger's query API for the operator view: messages by actor (the task-instance tab),
routes present, messages that went DEAD in a window (alerts), messages by IDs that are no
UUIDs, actors longer than the columns, and the upgrade of a ledger created at revision 0001."""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Connection

import kcbus.ledger
from kcbus._errors import NotFound
from kcbus.ledger import (
    ACTOR_LENGTH,
    DeliveryStatus,
    Ledger,
    MessageFilter,
    NewEnvelope,
    Status,
    clip_actor,
)
from kcbus.ledger._tables import events

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# Airflow allows 250 characters for each of dag_id, run_id and task_id.
LONG_TASK = "airflow:" + "d" * 250 + "/" + "manual__" + "r" * 242 + "/" + "t" * 250 + "[7]"


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")


def _messages(
    ledger: Ledger,
    n: int,
    *,
    actor: str = "kcbus@test",
    now: datetime = NOW,
    route: str | None = "bauantrag",
    uuids: Sequence[str] = (),
    status: Status = Status.ACKNOWLEDGED,
) -> list[int]:
    """``n`` messages handled by ``actor``: received, opened and settled in ``status``."""
    with ledger.unit(actor=actor, now=now) as unit:
        envelopes = [
            NewEnvelope(uuidlib.uuid4().bytes, str(uuidlib.uuid4()), "memory://in", None)
            for _ in range(n)
        ]
        ids = [i for i in unit.receive(envelopes) if i is not None]
        keys = list(uuids) or [str(uuidlib.uuid4()) for _ in ids]
        unit.claim_uuids(list(zip(ids, keys, strict=True)))
        for mid, key in zip(ids, keys, strict=True):
            unit.update(mid, uuid=key, route=route, status=status)
            unit.event(mid, "open", Status.OPENED)
            unit.event(mid, "deliver", status)
    return ids


def _went_dead(ledger: Ledger, mid: int, at: datetime, *, delivery_only: bool = False) -> None:
    """The delivery of ``mid`` spends its retries at ``at``; the message goes DEAD with it
    (as after a seal failure, only the delivery's event records it with ``delivery_only``)."""
    with ledger.unit(actor="kcbus@worker", now=at) as unit:
        (did,) = unit.add_deliveries([(mid, "praxis")])
        unit.update_delivery(did, status=DeliveryStatus.DEAD, attempts=5)
        unit.event(mid, "deliver", DeliveryStatus.DEAD, delivery_id=did)
        unit.update(mid, status=Status.DEAD, reason_code="transient", reason="refused")
        if not delivery_only:
            unit.event(mid, "deliver", Status.DEAD)


@contextmanager
def _statements(ledger: Ledger) -> Iterator[list[tuple[str, object]]]:
    """The queries (SELECTs) the ledger sends while inside the block."""
    seen: list[tuple[str, object]] = []

    def record(_c: Connection, _cur: object, sql: str, params: object, *_: object) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))

    engine = ledger._engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# -- messages by actor ----------------------------------------------------------------------


def test_filter_by_actor_finds_the_messages_a_task_instance_handled(tmp_path: Path) -> None:
    task = "airflow:kcbus_bauantrag/manual__2026-03-02T12:00:00+00:00/deliver[2]"
    with _ledger(tmp_path) as ledger:
        _messages(ledger, 5, actor="airflow:kcbus_bauantrag/manual__other/deliver[2]")
        mine = _messages(ledger, 3, actor=task)
        _messages(ledger, 4, actor="kcbus@cli")
        # An operator acting on one of them later does not make it the task's twice.
        ledger.mark_resolved([mine[0]], actor="alice", reason="seen", now=NOW)

        flt = MessageFilter(actor=task)
        assert [m.ledger_id for m in ledger.search(flt)] == sorted(mine, reverse=True)
        assert ledger.count(flt) == 3
        both = MessageFilter(actor=task, resolved=False)
        assert [m.ledger_id for m in ledger.search(both)] == sorted(mine[1:], reverse=True)
        assert ledger.search(MessageFilter(actor="airflow:kcbus_bauantrag/none/x")) == []
        assert [m.ledger_id for m in ledger.search(MessageFilter(actor="alice"))] == [mine[0]]


def test_actor_lookup_reads_the_actor_index_not_every_event(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        _messages(ledger, 20, actor="airflow:a/r/t")
        _messages(ledger, 20, actor="airflow:a/r/u")
        with _statements(ledger) as seen:
            assert len(ledger.search(MessageFilter(actor="airflow:a/r/t"), limit=5)) == 5
            assert ledger.count(MessageFilter(actor="airflow:a/r/t"), cap=1000) == 20
        db = sqlite3.connect(tmp_path / "l.sqlite")
        try:
            for sql, params in seen:
                plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]  # type: ignore[arg-type]
                assert any("ix_events_actor_message_id" in step for step in plan), plan
                assert not any(step.startswith("SCAN events") for step in plan), plan
                assert not any(step.startswith("SCAN messages") for step in plan), plan
        finally:
            db.close()


# -- long actors ----------------------------------------------------------------------------


def test_actors_longer_than_the_column_are_clipped_deterministically() -> None:
    clipped = clip_actor(LONG_TASK)
    assert len(clipped) == ACTOR_LENGTH
    assert clipped == clip_actor(LONG_TASK)
    # Both ends stay readable: the DAG at the start, the task and map index at the end.
    assert clipped.startswith("airflow:ddd") and clipped.endswith("ttt[7]")
    # Two actors that differ only in the clipped middle stay different.
    other = LONG_TASK.replace("manual__r", "manual__s")
    assert clip_actor(other) != clipped and len(clip_actor(other)) == ACTOR_LENGTH
    short = "airflow:kcbus_bauantrag/scheduled__2026-03-02T00:00:00+00:00/intake"
    assert clip_actor(short) == short
    assert clip_actor("x" * ACTOR_LENGTH) == "x" * ACTOR_LENGTH


def test_a_long_task_actor_is_stored_clipped_and_still_found(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        mine = _messages(ledger, 2, actor=LONG_TASK)
        _messages(ledger, 2, actor=LONG_TASK.replace("[7]", "[8]"))
        ledger.mark_resolved([mine[0]], actor="op:" + "o" * 400, reason="done", now=NOW)
        actors = {e.actor for e in ledger.history(mine[0]).events}
        assert actors == {clip_actor(LONG_TASK), clip_actor("op:" + "o" * 400)}
        assert ledger.get(mine[0]).resolved_by == clip_actor("op:" + "o" * 400)
        found = ledger.search(MessageFilter(actor=LONG_TASK))
        assert sorted(m.ledger_id for m in found) == mine


# -- routes and dead letters ----------------------------------------------------------------


def test_routes_lists_each_route_present_once_sorted(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        assert ledger.routes() == []
        _messages(ledger, 2, route="tarifdaten")
        _messages(ledger, 1, route="bauantrag")
        _messages(ledger, 1, route=None)  # not routed yet (or rejected before routing)
        assert ledger.routes() == ["bauantrag", "tarifdaten"]


def test_went_dead_lists_the_messages_whose_dead_transition_is_in_the_window(
    tmp_path: Path,
) -> None:
    with _ledger(tmp_path) as ledger:
        before, inside, edge, seal, other_flow, resent, fine = _messages(ledger, 7)
        _went_dead(ledger, before, NOW - timedelta(minutes=1))
        _went_dead(ledger, inside, NOW + timedelta(minutes=5))
        _went_dead(ledger, edge, NOW + timedelta(minutes=10))
        _went_dead(ledger, seal, NOW + timedelta(minutes=6), delivery_only=True)
        _went_dead(ledger, resent, NOW + timedelta(minutes=7))
        (elsewhere,) = _messages(ledger, 1, route="kommunen")
        _went_dead(ledger, elsewhere, NOW + timedelta(minutes=5))
        back = NOW + timedelta(minutes=8)
        ledger.resend([resent], actor="alice", reason="partner back", now=back)
        assert other_flow and fine  # written, never DEAD

        end = NOW + timedelta(minutes=10)
        every = ledger.went_dead(since=NOW, until=end)
        assert [m.ledger_id for m in every] == [inside, edge, seal, resent, elsewhere]
        still = MessageFilter(route="bauantrag", status=(Status.DEAD,), resolved=False)
        dead = ledger.went_dead(since=NOW, until=end, flt=still)
        assert [m.ledger_id for m in dead] == [inside, edge, seal]
        assert [m.reason_code for m in dead] == ["transient"] * 3
        # The next window starts where this one ended: the border case is reported again.
        later = ledger.went_dead(since=end, until=end + timedelta(hours=1))
        assert [m.ledger_id for m in later] == [edge]
        assert ledger.went_dead(since=NOW, until=end, flt=still, limit=2) == dead[:2]


# -- references -----------------------------------------------------------------------------


def test_get_finds_messages_whose_id_is_no_uuid(tmp_path: Path) -> None:
    cda = "1.2.276.0.76.4.17.9814184919^4711-a"  # HL7 CDA: root OID ^ extension
    xjustiz = "Nachricht_2026-000123"
    numeric = "98765"  # an ID of digits only: the partner's ID wins over a ledger ID
    upper = "6F1C2A7E-3B4D-4C5E-8F90-A1B2C3D4E5F6"
    with _ledger(tmp_path) as ledger:
        first = _messages(ledger, 1, uuids=["unrelated"])
        ids = _messages(ledger, 4, uuids=[cda, xjustiz, numeric, upper.lower()])
        for ref, mid in zip((cda, xjustiz, numeric, upper), ids, strict=True):
            assert ledger.get(ref).ledger_id == mid
            assert ledger.history(ref).message.ledger_id == mid
            assert [m.ledger_id for m in ledger.search(MessageFilter(uuid=ref))] == [mid]
        # ``#<id>`` and ints are always ledger IDs; digits that are no message ID, too.
        assert ledger.get(f"#{ids[2]}").ledger_id == ids[2]
        assert ledger.get(first[0]).ledger_id == first[0]
        assert ledger.get(str(first[0])).ledger_id == first[0]
        with pytest.raises(NotFound):  # ledger ID 98765, never the message ID "98765"
            ledger.get("#98765")
        # Envelope IDs still find their message.
        envelope = ledger.get(ids[0]).envelope_id
        assert envelope is not None and ledger.get(envelope).ledger_id == ids[0]
        with pytest.raises(NotFound):
            ledger.get("1.2.276.0.76.4.17.9814184919^unknown")
        with pytest.raises(NotFound):
            ledger.get("#424242")
        # Non-UUID IDs compare exactly: another case is another ID.
        with pytest.raises(NotFound):
            ledger.get(xjustiz.upper())


def test_a_message_id_is_found_through_its_index(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        (mid,) = _messages(ledger, 1, uuids=["1.2.3^x"])
        _messages(ledger, 30)
        with _statements(ledger) as seen:
            assert ledger.get("1.2.3^x").ledger_id == mid
        db = sqlite3.connect(tmp_path / "l.sqlite")
        try:
            plans = [
                [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]  # type: ignore[arg-type]
                for sql, params in seen
            ]
        finally:
            db.close()
        assert plans and not any(s.startswith("SCAN messages") for p in plans for s in p)


# -- schema upgrade -------------------------------------------------------------------------


def test_a_ledger_at_revision_0001_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option(
        "script_location", str(Path(kcbus.ledger.__file__).parent / "migrations")
    )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    with Ledger(url, migrate=False) as old:
        assert old.revision() == "0001"
        ids = _messages(old, 3, actor="airflow:a/r/t")
    with Ledger(url) as ledger:
        assert ledger.revision() == "0004"
        found = ledger.search(MessageFilter(actor="airflow:a/r/t"))
        assert sorted(m.ledger_id for m in found) == ids
    engine = create_engine(url)
    names = {ix["name"] for ix in inspect(engine).get_indexes("events")}
    engine.dispose()
    assert "ix_events_actor_message_id" in names


@pytest.mark.real
def test_queries_and_long_actors_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    with Ledger(postgres_url, keys=tmp_path / "k.keys") as ledger:
        # PostgreSQL enforces VARCHAR(200): an unclipped 770-character actor would fail here.
        keys = ["1.2.3^pg", "4711", str(uuidlib.uuid4())]
        mine = _messages(ledger, 3, actor=LONG_TASK, uuids=keys)
        _messages(ledger, 2, actor="airflow:a/r/t", route="kommunen")
        found = ledger.search(MessageFilter(actor=LONG_TASK))
        assert sorted(m.ledger_id for m in found) == mine
        assert ledger.get("1.2.3^pg").ledger_id == mine[0]
        assert ledger.get("4711").ledger_id == mine[1]
        assert ledger.routes() == ["bauantrag", "kommunen"]
        _went_dead(ledger, mine[2], NOW + timedelta(minutes=1))
        dead = ledger.went_dead(since=NOW, until=NOW + timedelta(minutes=2))
        assert [m.ledger_id for m in dead] == [mine[2]]
        with ledger._engine.connect() as conn:
            stored = conn.execute(
                select(events.c.actor).where(events.c.message_id == mine[0]).distinct()
            ).scalars().all()
        assert stored == [clip_actor(LONG_TASK)]
