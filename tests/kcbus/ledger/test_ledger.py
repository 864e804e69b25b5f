"""The ledger on its own: schema from migrations, append-only history, content encrypted at
rest with rotatable keys, retention, search and counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import DatabaseError

from kcbus._errors import LedgerError, NotFound
from kcbus.ledger import ContentKeyring, Kind, Ledger, MessageFilter, NewEnvelope, Status
from kcbus.ledger._tables import HEAD_REVISION, blobs, metadata

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")


def _receive(ledger: Ledger, *payloads: bytes, now: datetime = NOW) -> list[int]:
    with ledger.unit(actor="t", now=now) as unit:
        ids = unit.receive([NewEnvelope(p, None, "memory://x", None) for p in payloads])
    return [i for i in ids if i is not None]


def _assert_schema_matches(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_migrated_schema_is_the_code_schema_on_sqlite(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        assert ledger.revision() == HEAD_REVISION == "0004"
        _assert_schema_matches(ledger.url)


@pytest.mark.real
def test_migrated_schema_is_the_code_schema_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    with Ledger(postgres_url, keys=tmp_path / "k.keys") as ledger:
        assert ledger.revision() == HEAD_REVISION == "0004"
        _assert_schema_matches(postgres_url)
        _receive(ledger, b"x")
        with pytest.raises(DatabaseError, match="append-only"), ledger._engine.begin() as conn:
            conn.execute(text("UPDATE events SET detail = 'edited'"))


def test_history_is_append_only(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        _receive(ledger, b"envelope")
        with pytest.raises(DatabaseError, match="append-only"), ledger._engine.begin() as conn:
            conn.execute(text("UPDATE events SET detail = 'edited'"))


def test_content_is_encrypted_at_rest_and_bound_to_its_row(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        a, b = _receive(ledger, b"<secret>alpha</secret>", b"<secret>beta</secret>")
        raw = (tmp_path / "l.sqlite").read_bytes()
        assert b"alpha" not in raw and b"beta" not in raw
        with ledger._engine.begin() as conn:  # an attacker swaps the two ciphertexts
            rows = {r.message_id: r for r in conn.execute(select(blobs)).all()}
            conn.execute(update(blobs).where(blobs.c.message_id == a)
                         .values(data=rows[b].data, nonce=rows[b].nonce))
        with pytest.raises(LedgerError, match="integrity"), \
                ledger.unit(actor="t", now=NOW) as unit:
            unit.blobs("envelope", [a])


def test_key_rotation_keeps_old_content_readable_and_reencrypts(tmp_path: Path) -> None:
    key_file = tmp_path / "l.sqlite.keys"
    with _ledger(tmp_path) as ledger:
        (first,) = _receive(ledger, b"old content")
        old = ledger.keys.active
        new = ledger.keys.rotate()
        (second,) = _receive(ledger, b"new content")
        with ledger.unit(actor="t", now=NOW) as unit:
            assert unit.blobs("envelope", [first, second]) == {
                first: b"old content", second: b"new content"
            }
        assert ledger.reencrypt(actor="ops", now=NOW) == 1
        with ledger._engine.connect() as conn:
            assert {r.key_id for r in conn.execute(select(blobs))} == {new}
    ring = ContentKeyring.open(key_file, create=False)
    assert ring.active == new and old in ring.key_ids
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_prune_removes_only_settled_messages_past_retention(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        old_done, old_dead, old_busy, new_done = _receive(
            ledger, b"1", b"2", b"3", b"4", now=NOW - timedelta(days=40)
        )
        with ledger.unit(actor="t", now=NOW - timedelta(days=40)) as unit:
            for mid, status in ((old_done, Status.ACKNOWLEDGED), (old_dead, Status.DEAD),
                                (old_busy, Status.ROUTED)):
                unit.update(mid, status=status, route="bauantrag")
        with ledger.unit(actor="t", now=NOW - timedelta(days=1)) as unit:
            unit.update(new_done, status=Status.ACKNOWLEDGED, route="bauantrag")
        removed = ledger.prune(
            now=NOW, actor="ops",
            retention=lambda route: timedelta(days=30) if route == "bauantrag" else None,
        )
        assert removed == 1
        with pytest.raises(NotFound):
            ledger.get(old_done)
        left = {m.ledger_id for m in ledger.search()}
        assert left == {old_dead, old_busy, new_done}  # DEAD stays until resolved


def test_search_filters_and_counts_per_bucket(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        ids = _receive(ledger, b"a", b"b", b"c", now=NOW)
        (late,) = _receive(ledger, b"d", now=NOW + timedelta(minutes=90))
        with ledger.unit(actor="t", now=NOW) as unit:
            unit.update(ids[0], status=Status.REJECTED, sender="gemeinde-a",
                        message_type="baugenehmigung.antrag.0200")
            unit.update(ids[1], status=Status.ACKNOWLEDGED, sender="klinikum",
                        message_type="18842-5")
        assert [m.ledger_id for m in ledger.search(MessageFilter(partner="gemeinde-a"))] == [
            ids[0]
        ]
        found = ledger.search(MessageFilter(message_type="baugenehmigung.*"))
        assert [m.ledger_id for m in found] == [ids[0]]
        since = ledger.search(MessageFilter(since=NOW + timedelta(minutes=1)))
        assert [m.ledger_id for m in since] == [late]
        assert ledger.count(MessageFilter(kind=Kind.MESSAGE)) == 4
        assert ledger.count(cap=2) == 2
        counts = ledger.counts(since=NOW, until=NOW + timedelta(hours=2),
                               bucket=timedelta(hours=1), group_by="status")
        got = {(c.bucket, c.key): c.count for c in counts}
        assert got == {
            (NOW, "REJECTED"): 1, (NOW, "ACKNOWLEDGED"): 1, (NOW, "RECEIVED"): 1,
            (NOW + timedelta(hours=1), "RECEIVED"): 1,
        }


def test_resolve_is_audited(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        (mid,) = _receive(ledger, b"x")
        with ledger.unit(actor="t", now=NOW) as unit:
            unit.update(mid, status=Status.DEAD)
        outcome = ledger.mark_resolved([mid], actor="alice", reason="partner informed", now=NOW)
        assert [m.ledger_id for m in outcome.acted] == [mid]
        row = ledger.get(mid)
        assert row.resolved and row.resolved_by == "alice"
        event = ledger.history(mid).events[-1]
        assert (event.stage, event.actor, event.detail) == ("resolve", "alice",
                                                             "partner informed")
        again = ledger.mark_resolved([mid], actor="bob", reason="again", now=NOW)
        assert again.skipped == ((f"#{mid}", "already resolved"),)
        assert ledger.search(MessageFilter(resolved=False)) == []


def test_unknown_reference_is_not_found(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, pytest.raises(NotFound):
        ledger.get("6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6")

