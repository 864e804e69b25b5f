"""Large blobs in chunks: streamed in and out, each chunk bound to its place and position, and
carried by prune, reencrypt, backup and restore."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from kcbus._errors import LedgerError
from kcbus.ledger import BLOB_INLINE_MAX, Ledger, NewEnvelope, Status, StoredBlob
from kcbus.ledger._chunks import CHUNK
from kcbus.ledger._tables import blob_chunks, blobs

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SIZE = BLOB_INLINE_MAX + 3 * CHUNK + 12345  # 12 chunks, the last one short


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")


def _receive_large(ledger: Ledger, data: bytes) -> int:
    with ledger.unit(actor="test", now=NOW) as unit:
        (message_id,) = unit.receive(
            [NewEnvelope(None, "env-1", "memory://in", None, stream=io.BytesIO(data))]
        )
    assert message_id is not None
    return message_id


def _read(ledger: Ledger, message_id: int, kind: str = "envelope", delivery_id: int = 0) -> bytes:
    with (
        ledger.unit(actor="test", now=NOW) as unit,
        unit.open_blob(message_id, kind, delivery_id=delivery_id) as src,
    ):
        return src.read()


def test_a_large_envelope_is_stored_in_encrypted_chunks_and_streams_back(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, data)
        with ledger._engine.begin() as conn:
            row = conn.execute(select(blobs).where(blobs.c.message_id == message_id)).one()
            stored = conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one()
            first = conn.execute(select(blob_chunks.c.data).where(blob_chunks.c.seq == 0)).one()
        assert (row.chunks, stored, row.size, row.data) == (12, 12, SIZE, b"")
        assert row.digest == hashlib.sha256(data).hexdigest()
        assert bytes(first.data)[:64] != data[:64]  # encrypted at rest
        assert ledger.get(message_id).size == SIZE
        assert _read(ledger, message_id) == data
        # seekable: a read in the middle fetches only the chunks it needs
        with ledger.unit(actor="test", now=NOW) as unit:
            sources = unit.blob_sources("envelope", [message_id])
            found = sources[message_id]
            assert isinstance(found, StoredBlob) and found.size == SIZE
            with found.open() as src:
                src.seek(5 * CHUNK - 10)
                assert src.read(20) == data[5 * CHUNK - 10 : 5 * CHUNK + 10]
                assert src.seek(0, io.SEEK_END) == SIZE
        # the same envelope again (a redelivery) is recognised from the stream's digest
        with ledger.unit(actor="test", now=NOW) as unit:
            assert unit.receive(
                [NewEnvelope(None, "env-1", "memory://in", None, stream=io.BytesIO(data))]
            ) == [None]


def test_small_streams_stay_one_row(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, b"small envelope")
        with ledger._engine.begin() as conn:
            row = conn.execute(select(blobs).where(blobs.c.message_id == message_id)).one()
        assert row.chunks == 0 and row.size == 14
        assert _read(ledger, message_id) == b"small envelope"


@pytest.mark.parametrize(
    "attack",
    [
        "DELETE FROM blob_chunks WHERE seq = 11",  # cut off the end
        "DELETE FROM blob_chunks WHERE seq = 11; UPDATE blobs SET chunks = 11, size = 11534336",
        "UPDATE blob_chunks SET seq = 99 WHERE seq = 3; "
        "UPDATE blob_chunks SET seq = 3 WHERE seq = 4; "
        "UPDATE blob_chunks SET seq = 4 WHERE seq = 99",
        "UPDATE blob_chunks SET data = (SELECT data FROM blob_chunks WHERE seq = 2) WHERE seq = 1",
    ],
    ids=["truncated", "truncated-and-count-fixed", "reordered", "swapped"],
)
def test_tampered_chunks_fail_to_open(tmp_path: Path, attack: str) -> None:
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, os.urandom(SIZE))
        with ledger._engine.begin() as conn:
            for statement in attack.split(";"):
                conn.execute(text(statement))
        with pytest.raises(LedgerError):
            _read(ledger, message_id)


def test_a_chunk_moved_to_another_message_fails_to_open(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        a = _receive_large(ledger, os.urandom(SIZE))
        b = _receive_large(ledger, os.urandom(SIZE))
        with ledger._engine.begin() as conn:
            ids = {
                r.message_id: r.id
                for r in conn.execute(select(blobs.c.id, blobs.c.message_id)).all()
            }
            conn.execute(
                text(
                    "UPDATE blob_chunks SET data = (SELECT data FROM blob_chunks "
                    "WHERE blob_id = :a AND seq = 0), nonce = (SELECT nonce FROM blob_chunks "
                    "WHERE blob_id = :a AND seq = 0) WHERE blob_id = :b AND seq = 0"
                ),
                {"a": ids[a], "b": ids[b]},
            )
        with pytest.raises(LedgerError, match="integrity"):
            _read(ledger, b)


def test_sealed_blobs_are_chunked_as_sealed_and_a_reseal_replaces_them(tmp_path: Path) -> None:
    first, second = os.urandom(SIZE), os.urandom(SIZE + CHUNK)
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, b"envelope")
        for data in (first, second):
            with ledger.unit(actor="test", now=NOW) as unit:
                size, digest = unit.put_blob_stream(
                    message_id,
                    "sealed",
                    io.BytesIO(data),
                    delivery_id=7,
                    replace=True,
                    encrypt=False,
                )
                assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
        with ledger._engine.begin() as conn:
            row = conn.execute(select(blobs).where(blobs.c.kind == "sealed")).one()
            chunks = conn.execute(
                select(func.count()).select_from(blob_chunks).where(blob_chunks.c.blob_id == row.id)
            ).scalar_one()
            assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() == 13
        assert (row.key_id, row.chunks, chunks) == ("as-sealed", 13, 13)
        assert _read(ledger, message_id, "sealed", 7) == second


def test_a_writer_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, b"envelope")
        with (
            ledger.unit(actor="test", now=NOW) as unit,
            pytest.raises(RuntimeError),
            unit.blob_writer(message_id, "content") as out,
        ):
            out.write(os.urandom(SIZE))
            raise RuntimeError("the sealer failed")
        with ledger._engine.begin() as conn:
            assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() == 0
            assert (
                conn.execute(
                    select(func.count()).select_from(blobs).where(blobs.c.kind == "content")
                ).scalar_one()
                == 0
            )


def test_reencrypt_and_prune_handle_chunked_blobs(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, data)
        old = ledger.keys.active
        new = ledger.keys.rotate()
        assert ledger.reencrypt(actor="ops", now=NOW) == 1
        with ledger._engine.begin() as conn:
            assert conn.execute(select(blobs.c.key_id)).scalar_one() == new
        ledger.keys._keys.pop(old)  # the old key retired: the content still opens
        ledger.keys._aead.pop(old)
        assert _read(ledger, message_id) == data
        with ledger.unit(actor="test", now=NOW) as unit:
            unit.update(message_id, status=Status.ACKNOWLEDGED, route="bauantrag")
        removed = ledger.prune(
            now=NOW + timedelta(days=60), retention=lambda _: timedelta(days=30), actor="ops"
        )
        assert removed == 1
        with ledger._engine.begin() as conn:
            assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() == 0


def test_backup_and_restore_carry_chunked_blobs_byte_identically(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    backup = tmp_path / "backup.sqlite"
    with _ledger(tmp_path) as source:
        message_id = _receive_large(source, data)
        before = source.fingerprint()
        counts = source.backup(backup, actor="ops", now=NOW)
        keys = source.keys
    assert counts["blob_chunks"] == 12
    with Ledger(f"sqlite:///{tmp_path / 'restored.sqlite'}", keys=keys) as target:
        target.restore(backup, actor="ops", now=NOW)
        after = target.fingerprint()
        assert {t: d for t, d in after.items() if t != "audit"} == {
            t: d for t, d in before.items() if t != "audit"
        }
        assert _read(target, message_id) == data


def _downgrade_to_0002(ledger: Ledger) -> None:
    from alembic import command
    from alembic.config import Config

    import kcbus.ledger

    config = Config()
    config.set_main_option(
        "script_location", str(Path(kcbus.ledger.__file__).parent / "migrations"))
    with ledger._engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")


def test_downgrade_below_0003_refuses_while_blobs_are_chunked(tmp_path: Path) -> None:
    """Revision 0002 has nowhere to keep a chunked blob: the downgrade must not leave those
    blobs empty; without any, it goes through."""
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, b"envelope")
        with ledger.unit(actor="test", now=NOW) as unit:  # as sealed: no salt for 0004 to refuse
            unit.put_blob_stream(
                message_id, "sealed", io.BytesIO(os.urandom(SIZE)), delivery_id=7, encrypt=False
            )
        with pytest.raises(RuntimeError, match="stored in chunks"):
            _downgrade_to_0002(ledger)
        with ledger._engine.begin() as conn:
            assert conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one() == 12
    with Ledger(f"sqlite:///{tmp_path / 'empty.sqlite'}") as empty:
        _downgrade_to_0002(empty)
        with empty._engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == "0002"


def test_reencrypt_takes_a_chunked_blob_in_a_transaction_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of MB per blob: one chunked blob per write transaction, and inline blobs up
    to a byte bound, so neither memory nor the write lock grow with the batch."""
    from kcbus.ledger import _ledger as ledger_module

    with _ledger(tmp_path) as ledger:
        large = [_receive_large(ledger, os.urandom(SIZE)) for _ in range(2)]
        with ledger.unit(actor="test", now=NOW) as unit:
            small = unit.receive([NewEnvelope(os.urandom(1000), f"env-s{i}", "memory://in", None)
                                  for i in range(3)])
        ledger.keys.rotate()
        monkeypatch.setattr(ledger_module, "_REENCRYPT_BYTES", 1500)
        writes = 0
        original = ledger._write

        def counted() -> object:
            nonlocal writes
            writes += 1
            return original()

        monkeypatch.setattr(ledger, "_write", counted)
        assert ledger.reencrypt(actor="ops", now=NOW) == 5
        # each large blob alone; small ones while they fit 1,500 bytes (one each); the end
        assert writes == 2 + 3 + 1
        for message_id in [*large, *small]:
            assert message_id is not None


@pytest.mark.parametrize("same_unit", [False, True], ids=["next-unit", "same-unit"])
def test_a_small_reseal_over_a_chunked_one_and_back(tmp_path: Path, same_unit: bool) -> None:
    """A re-seal may cross the inline/chunked line either way (another key or profile): the
    place then holds exactly the new blob, no stale chunk count, no orphan chunks."""
    large, small = os.urandom(SIZE), b"<small sealed envelope/>"
    with _ledger(tmp_path) as ledger:
        message_id = _receive_large(ledger, b"envelope")

        def put(unit: object, data: bytes) -> None:
            unit.put_blob_stream(  # type: ignore[attr-defined]
                message_id, "sealed", io.BytesIO(data), delivery_id=7, replace=True,
                encrypt=False)

        if same_unit:
            with ledger.unit(actor="test", now=NOW) as unit:
                put(unit, small)
                put(unit, large)  # the pending inline row must not be flushed over it
            assert _read(ledger, message_id, "sealed", 7) == large
        for data in (large, small, large, small):
            with ledger.unit(actor="test", now=NOW) as unit:
                put(unit, data)
            assert _read(ledger, message_id, "sealed", 7) == data
        with ledger._engine.begin() as conn:
            row = conn.execute(select(blobs).where(blobs.c.kind == "sealed")).one()
            left = conn.execute(select(func.count()).select_from(blob_chunks)).scalar_one()
        assert (row.chunks, row.size, left) == (0, len(small), 0)


def test_each_receive_event_names_its_own_envelope_size(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger, ledger.unit(actor="test", now=NOW) as unit:
        ids = unit.receive([NewEnvelope(b"x" * n, f"env-{n}", "memory://in", None)
                            for n in (10, 2000)])
        unit.flush()
        details = [
            unit._conn.execute(text("SELECT detail FROM events WHERE message_id = :m"),
                               {"m": i}).scalar_one()
            for i in ids
        ]
    assert "10" in details[0] and "2000" not in details[0] and "2000" in details[1]
