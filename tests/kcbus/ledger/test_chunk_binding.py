"""Chunks bound to their blob's version (``blobs.salt``, migration 0004) and the whole-blob
digest checked at the end of a read: chunks of an earlier blob at the same place, and bytes of
a blob stored as sealed changed in place, do not pass; blobs written before salts still open."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, func, insert, inspect, select, text, update
from sqlalchemy.engine import Connection

import kcbus.ledger
from kcbus._errors import LedgerError
from kcbus.ledger import BLOB_INLINE_MAX, ContentKeyring, Ledger, NewEnvelope
from kcbus.ledger._backup import _canonical, _rows
from kcbus.ledger._chunks import CHUNK
from kcbus.ledger._tables import blob_chunks, blobs, messages

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SIZE = BLOB_INLINE_MAX + 3 * CHUNK + 12345  # 12 chunks, the last one short
SPLICED = 3  # the chunk an attacker replaces


def _ledger(tmp_path: Path, name: str = "l.sqlite") -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / name}")


def _message(ledger: Ledger) -> int:
    with ledger.unit(actor="test", now=NOW) as unit:
        (message_id,) = unit.receive([NewEnvelope(b"<envelope/>", None, "memory://in", None)])
    assert message_id is not None
    return message_id


def _put(ledger: Ledger, message_id: int, data: bytes, *, kind: str, encrypt: bool) -> None:
    with ledger.unit(actor="test", now=NOW) as unit:
        unit.put_blob_stream(message_id, kind, io.BytesIO(data), replace=True, encrypt=encrypt)


def _read(ledger: Ledger, message_id: int, kind: str) -> bytes:
    with ledger.unit(actor="test", now=NOW) as unit, unit.open_blob(message_id, kind) as src:
        return src.read()


def _chunk(conn: Connection, message_id: int, kind: str, seq: int) -> tuple[bytes, bytes]:
    row = conn.execute(
        select(blob_chunks.c.nonce, blob_chunks.c.data)
        .join(blobs, blobs.c.id == blob_chunks.c.blob_id)
        .where(blobs.c.message_id == message_id, blobs.c.kind == kind, blob_chunks.c.seq == seq)
    ).one()
    return bytes(row.nonce), bytes(row.data)


def _set_chunk(
    conn: Connection, message_id: int, kind: str, seq: int, nonce: bytes, data: bytes
) -> None:
    blob_id = conn.execute(
        select(blobs.c.id).where(blobs.c.message_id == message_id, blobs.c.kind == kind)
    ).scalar_one()
    conn.execute(
        update(blob_chunks)
        .where(blob_chunks.c.blob_id == blob_id, blob_chunks.c.seq == seq)
        .values(nonce=nonce, data=data)
    )


def _write_v1(
    conn: Connection, keys: ContentKeyring, message_id: int, data: bytes, kind: str
) -> None:
    """A chunked blob as revision 0003's code wrote it: no salt; each chunk's associated data
    names only its place and position (``kcbus-ledger-chunk/1``)."""
    count = -(-len(data) // CHUNK)
    row = {
        "message_id": message_id,
        "delivery_id": 0,
        "kind": kind,
        "key_id": keys.active,
        "nonce": b"",
        "data": b"",
        "size": len(data),
        "digest": hashlib.sha256(data).hexdigest(),
        "chunks": count,
    }
    blob_id = conn.execute(insert(blobs).returning(blobs.c.id), [row]).scalar_one()
    for seq in range(count):
        final = int(seq == count - 1)
        associated = f"kcbus-ledger-chunk/1:{message_id}:{kind}:0:{seq}:{final}".encode()
        sealed = keys.encrypt(data[seq * CHUNK : (seq + 1) * CHUNK], associated)
        conn.execute(
            insert(blob_chunks),
            [{"blob_id": blob_id, "seq": seq, "nonce": sealed.nonce, "data": sealed.data}],
        )


def _replace_v1(ledger: Ledger, message_id: int, data: bytes, kind: str) -> None:
    with ledger._engine.begin() as conn:
        conn.execute(
            blob_chunks.delete().where(
                blob_chunks.c.blob_id.in_(select(blobs.c.id).where(blobs.c.kind == kind))
            )
        )
        conn.execute(blobs.delete().where(blobs.c.kind == kind))
        _write_v1(conn, ledger.keys, message_id, data, kind)


# -- splicing an earlier blob of the same place ---------------------------------------------


def test_a_chunk_of_an_earlier_blob_at_the_same_place_fails_to_open(tmp_path: Path) -> None:
    """The place written again under the same key (a re-seal after a resend): a chunk kept
    from the first blob, put into the second at its own index, names the first blob's salt."""
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _put(ledger, message_id, first, kind="content", encrypt=True)
        with ledger._engine.begin() as conn:
            kept = _chunk(conn, message_id, "content", SPLICED)
            salt = conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content")).scalar()
        _put(ledger, message_id, second, kind="content", encrypt=True)
        assert _read(ledger, message_id, "content") == second
        with ledger._engine.begin() as conn:
            now = conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content")).scalar()
            assert now not in (None, salt)
            _set_chunk(conn, message_id, "content", SPLICED, *kept)
        with pytest.raises(LedgerError, match="integrity"):
            _read(ledger, message_id, "content")
        # the chunk itself fails, not only the blob as a whole
        with (
            ledger.unit(actor="test", now=NOW) as unit,
            unit.open_blob(message_id, "content") as src,
        ):
            assert src.read(100) == second[:100]
            src.seek(SPLICED * CHUNK)
            with pytest.raises(LedgerError, match="integrity"):
                src.read(100)


def test_a_spliced_blob_of_version_1_opens_chunkwise_but_fails_its_digest(
    tmp_path: Path,
) -> None:
    """Blobs written before salts keep the old binding, so the spliced chunk opens; read to
    the end, the blob no longer matches its digest, and reencrypt refuses to seal it anew."""
    first, second = os.urandom(SIZE), os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _replace_v1(ledger, message_id, first, "content")
        with ledger._engine.begin() as conn:
            kept = _chunk(conn, message_id, "content", SPLICED)
        _replace_v1(ledger, message_id, second, "content")
        with ledger._engine.begin() as conn:
            _set_chunk(conn, message_id, "content", SPLICED, *kept)
        with (
            ledger.unit(actor="test", now=NOW) as unit,
            unit.open_blob(message_id, "content") as src,
        ):
            src.seek(SPLICED * CHUNK)
            assert src.read(100) == first[SPLICED * CHUNK :][:100]  # the v1 weakness
        with pytest.raises(LedgerError, match="does not match its digest"):
            _read(ledger, message_id, "content")
        old = ledger.keys.active
        ledger.keys.rotate()
        with pytest.raises(LedgerError, match="does not match its digest"):
            ledger.reencrypt(actor="ops", now=NOW)
        with ledger._engine.begin() as conn:  # rolled back: still under the old key, unsalted
            row = conn.execute(
                select(blobs.c.key_id, blobs.c.salt).where(blobs.c.kind == "content")
            ).one()
        assert (row.key_id, row.salt) == (old, None)


# -- blobs stored as sealed: the digest at the end ------------------------------------------


def _tamper_sealed(tmp_path: Path) -> tuple[Ledger, int, bytes]:
    data = os.urandom(SIZE)
    ledger = _ledger(tmp_path)
    message_id = _message(ledger)
    _put(ledger, message_id, data, kind="sealed", encrypt=False)
    with ledger._engine.begin() as conn:
        nonce, stored = _chunk(conn, message_id, "sealed", 5)
        assert stored == data[5 * CHUNK : 6 * CHUNK]  # as sealed: no second layer
        changed = stored[:1000] + bytes(b ^ 0xFF for b in stored[1000:1016]) + stored[1016:]
        _set_chunk(conn, message_id, "sealed", 5, nonce, changed)
    return ledger, message_id, data


def test_bytes_of_a_sealed_blob_changed_in_place_are_detected_at_the_end(
    tmp_path: Path,
) -> None:
    ledger, message_id, data = _tamper_sealed(tmp_path)
    with ledger:
        with pytest.raises(LedgerError) as caught:
            _read(ledger, message_id, "sealed")
        assert str(caught.value) == (
            f"ledger blob sealed of message {message_id} does not match its digest (tampered)"
        )
        with ledger.unit(actor="test", now=NOW) as unit:
            with pytest.raises(LedgerError, match="digest"):
                unit.blobs("sealed", [message_id])
            # read in pieces, going back on the way: the last piece is refused, not handed out
            with unit.open_blob(message_id, "sealed") as src:
                got = src.read(7 * CHUNK)
                src.seek(2 * CHUNK)
                assert src.read(CHUNK) == data[2 * CHUNK : 3 * CHUNK]
                src.seek(7 * CHUNK)
                for _ in range(3):
                    got += src.read(CHUNK)
                with pytest.raises(LedgerError, match="digest"):
                    src.read()
                with pytest.raises(LedgerError, match="digest"):  # and stays refused
                    src.read()
            assert len(got) == 10 * CHUNK < SIZE
            # a reader that skipped bytes has nothing to compare: it checks nothing
            with unit.open_blob(message_id, "sealed") as src:
                src.seek(6 * CHUNK)
                assert src.read() == data[6 * CHUNK :]


def test_a_whole_read_in_any_order_of_an_intact_blob_passes(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _put(ledger, message_id, data, kind="sealed", encrypt=False)
        with ledger.unit(actor="test", now=NOW) as unit:
            with unit.open_blob(message_id, "sealed") as src:
                src.seek(9 * CHUNK)  # ahead, then back to the start: each byte hashed once
                tail = src.read()
                src.seek(0)
                head = src.read(9 * CHUNK + 17)
                src.seek(CHUNK)
                src.read(CHUNK)
                src.seek(9 * CHUNK + 17)
                assert head + src.read() == data and tail == data[9 * CHUNK :]
                assert src.read() == b""
            assert unit.blobs("sealed", [message_id]) == {message_id: data}


# -- blobs written before salts -------------------------------------------------------------


def test_a_blob_of_version_1_opens_and_reencrypt_binds_it_to_a_salt(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _replace_v1(ledger, message_id, data, "content")
        assert _read(ledger, message_id, "content") == data
        with ledger._engine.begin() as conn:
            conn.execute(update(messages).values(inspection="full"))
        assert ledger.content(message_id, actor="ops", reason="check", now=NOW) == data
        old = ledger.keys.active
        new = ledger.keys.rotate()
        assert ledger.reencrypt(actor="ops", now=NOW) == 2  # the envelope and the content
        ledger.keys._keys.pop(old)  # the old key retired
        ledger.keys._aead.pop(old)
        with ledger._engine.begin() as conn:
            row = conn.execute(select(blobs).where(blobs.c.kind == "content")).one()
            nonce, stored = _chunk(conn, message_id, "content", 0)
        assert row.key_id == new and len(row.salt) == 16
        associated = f"kcbus-ledger-chunk/2:{row.salt.hex()}:{message_id}:content:0:0:0"
        assert ledger.keys.decrypt(new, nonce, stored, associated.encode()) == data[:CHUNK]
        assert _read(ledger, message_id, "content") == data


def test_reencrypt_gives_a_salted_blob_a_fresh_salt(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _put(ledger, message_id, data, kind="content", encrypt=True)
        with ledger._engine.begin() as conn:
            before = conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content"))
            salt = before.scalar_one()
        ledger.keys.rotate()
        assert ledger.reencrypt(actor="ops", now=NOW) == 2
        with ledger._engine.begin() as conn:
            after = conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content"))
            assert after.scalar_one() not in (None, salt)
        assert _read(ledger, message_id, "content") == data


def test_only_encrypted_chunked_blobs_carry_a_salt(tmp_path: Path) -> None:
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _put(ledger, message_id, os.urandom(SIZE), kind="content", encrypt=True)
        _put(ledger, message_id, os.urandom(SIZE), kind="sealed", encrypt=False)
        _put(ledger, message_id, os.urandom(SIZE), kind="facts", encrypt=True)
        _put(ledger, message_id, b"<small/>", kind="facts", encrypt=True)  # inline over chunked
        with ledger._engine.begin() as conn:
            salts = dict(conn.execute(select(blobs.c.kind, blobs.c.salt)).all())
        assert {k: v is not None for k, v in salts.items()} == {
            "envelope": False,
            "content": True,
            "sealed": False,
            "facts": False,
        }


# -- backup and restore ---------------------------------------------------------------------


def _as_revision_0003(backup: Path) -> None:
    """Make a backup look as revision 0003's code wrote it: ``blobs`` without ``salt``."""
    engine = create_engine(f"sqlite:///{backup}")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE blobs DROP COLUMN salt")
        digest = hashlib.sha256()
        columns = [c.name for c in blobs.columns if c.name != "salt"]
        for row in _rows(conn, blobs, columns):
            digest.update(_canonical(row))
        info = conn.execute(text("SELECT value FROM backup_info WHERE name = 'fingerprints'"))
        fingerprints = json.loads(info.scalar_one())
        fingerprints["blobs"] = digest.hexdigest()
        conn.execute(
            text("UPDATE backup_info SET value = :v WHERE name = 'fingerprints'"),
            {"v": json.dumps(fingerprints)},
        )
        conn.execute(text("UPDATE backup_info SET value = '0003' WHERE name = 'revision'"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    engine.dispose()


def test_a_backup_of_revision_0003_restores_and_its_chunked_blob_opens(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    backup = tmp_path / "backup.sqlite"
    with _ledger(tmp_path) as source:
        message_id = _message(source)
        _replace_v1(source, message_id, data, "content")
        source.backup(backup, actor="ops", now=NOW)
        keys = source.keys
    _as_revision_0003(backup)
    with sqlite3.connect(backup) as db:
        assert "salt" not in {r[1] for r in db.execute("PRAGMA table_info(blobs)")}
    with Ledger(f"sqlite:///{tmp_path / 'restored.sqlite'}", keys=keys) as target:
        counts = target.restore(backup, actor="ops", now=NOW)
        assert counts["blob_chunks"] == 12
        assert _read(target, message_id, "content") == data


def test_backup_and_restore_keep_the_salt(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    backup = tmp_path / "backup.sqlite"
    with _ledger(tmp_path) as source:
        message_id = _message(source)
        _put(source, message_id, data, kind="content", encrypt=True)
        with source._engine.begin() as conn:
            salt = conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content")).one()
        source.backup(backup, actor="ops", now=NOW)
        before = source.fingerprint()
        keys = source.keys
    with Ledger(f"sqlite:///{tmp_path / 'restored.sqlite'}", keys=keys) as target:
        target.restore(backup, actor="ops", now=NOW)
        assert target.fingerprint()["blobs"] == before["blobs"]
        with target._engine.begin() as conn:
            assert conn.execute(select(blobs.c.salt).where(blobs.c.kind == "content")).one() == salt
        assert _read(target, message_id, "content") == data


# -- migration 0004 -------------------------------------------------------------------------


def _alembic(engine: Engine, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(kcbus.ledger.__file__).parent / "migrations")
    )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def _chunk_bytes(engine: Engine) -> tuple[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(blob_chunks.c.data).order_by(blob_chunks.c.blob_id, blob_chunks.c.seq)
        ).all()
    return len(rows), hashlib.sha256(b"".join(bytes(r.data) for r in rows)).hexdigest()


def _up_and_down(url: str, keys: ContentKeyring) -> None:
    """0003 → 0004 with a chunked blob of 0003 in place, back to 0003 (it keeps every chunk),
    up again; with a salted blob, down is refused and nothing changes."""
    data = os.urandom(SIZE)
    engine = create_engine(url)
    _alembic(engine, "upgrade", "0003")
    with engine.begin() as conn:
        message_id = conn.execute(
            insert(messages)
            .values(kind="message", status="received", received_at=NOW, updated_at=NOW)
            .returning(messages.c.id)
        ).scalar_one()
        _write_v1(conn, keys, message_id, data, "content")
    with Ledger(url, keys=keys) as ledger:
        assert ledger.revision() == "0004"
        assert _read(ledger, message_id, "content") == data
    stored = _chunk_bytes(engine)
    _alembic(engine, "downgrade", "0003")
    columns = {c["name"] for c in inspect(engine).get_columns("blobs")}
    assert "salt" not in columns and "chunks" in columns
    assert _chunk_bytes(engine) == stored  # no chunk lost with the column
    with Ledger(url, keys=keys) as ledger:
        assert ledger.revision() == "0004"
        assert _read(ledger, message_id, "content") == data
        _put(ledger, message_id, os.urandom(SIZE), kind="facts", encrypt=True)
    stored = _chunk_bytes(engine)
    with pytest.raises(RuntimeError, match="1 chunked blobs are bound to their salt"):
        _alembic(engine, "downgrade", "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0004"
        assert conn.execute(select(func.count()).where(blobs.c.salt.is_not(None))).scalar() == 1
    assert _chunk_bytes(engine) == stored
    engine.dispose()


def test_migration_0004_up_and_down_on_sqlite(tmp_path: Path) -> None:
    _up_and_down(f"sqlite:///{tmp_path / 'm.sqlite'}", ContentKeyring.generate())


def test_migration_0004_down_keeps_chunks_with_foreign_keys_on(tmp_path: Path) -> None:
    """The ledger's own connections enforce foreign keys: dropping the column must not
    recreate ``blobs`` (that would cascade into ``blob_chunks``)."""
    with _ledger(tmp_path) as ledger:
        message_id = _message(ledger)
        _replace_v1(ledger, message_id, os.urandom(SIZE), "content")
        stored = _chunk_bytes(ledger._engine)
        with ledger._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        _alembic(ledger._engine, "downgrade", "0003")
        assert _chunk_bytes(ledger._engine) == stored


@pytest.mark.real
def test_migration_0004_up_and_down_on_postgres(postgres_url: str) -> None:
    _up_and_down(postgres_url, ContentKeyring.generate())
