"""Backup and restore: the whole ledger to one SQLite file and back, byte for byte.

Format ``kcbus-ledger-backup/1``: a SQLite database with the ledger's tables at the schema
revision of the writing code, every row copied as stored (content stays encrypted under its
key ID: the key file is *not* in the backup — back it up separately), plus a ``backup_info``
table with the format, revision, time, source dialect, row counts and a SHA-256 fingerprint
per table. Being SQLite, a backup can be inspected with the ``sqlite3`` shell, and it moves
between SQLite and PostgreSQL ledgers.

Invariants: the backup is read from one snapshot (consistent while workers keep writing); it
is written to a temporary file and renamed into place (never a half backup under the final
name); restore checks format, revision and fingerprints *before* committing, into an empty
ledger unless told to replace, and keeps every row ID (blob associated data binds to them).
Large blobs' chunks (``blob_chunks``, ~1 MiB each) are copied like any row, as stored, a few
at a time: memory stays bounded by :data:`_BATCH_BYTES`, not by the ledger's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, delete, func, insert, select, text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.pool import NullPool

from kcbus._errors import LedgerError
from kcbus.ledger._tables import (
    HEAD_REVISION,
    audit,
    blob_chunks,
    blobs,
    deliveries,
    events,
    message_keys,
    messages,
    metadata,
)

__all__ = ["FORMAT", "backup", "fingerprint", "restore"]

FORMAT = "kcbus-ledger-backup/1"
#: Schema revisions whose backups restore row for row: their tables hold the columns of
#: HEAD_REVISION or a subset whose missing columns have defaults (0002 added an index; 0003 added
#: ``blobs.chunks``, default 0, and the ``blob_chunks`` table, absent from older backups; 0004
#: added ``blobs.salt``, NULL: the chunk binding such a backup's chunked blobs have). Restore
#: copies the columns the backup has. A migration that changes columns otherwise must not be
#: added here; it needs a restore that upgrades the rows.
ROW_COMPATIBLE_REVISIONS = frozenset({"0001", "0002", "0003", HEAD_REVISION})
#: Parents before children (foreign keys hold at every insert); rows in key order.
_TABLES: tuple[Table, ...] = (messages, message_keys, deliveries, events, blobs, blob_chunks, audit)
#: Rows per insert, and bytes: whichever comes first (chunk rows are ~1 MiB each).
_CHUNK = 2000
_BATCH_BYTES = 16 << 20


def _ordered(table: Table) -> list[Any]:
    if table is message_keys:
        return [table.c.uuid]
    if table is blob_chunks:
        return [table.c.blob_id, table.c.seq]
    return [table.c.id]


def _rows(
    conn: Connection, table: Table, columns: list[str] | None = None
) -> Iterator[Row[tuple[object, ...]]]:
    """Every row in key order, streamed; only ``columns`` (default: all)."""
    # Chunk rows are ~1 MiB, inline blobs up to 8 MiB: fetch few of those at a time.
    per = 8 if table is blob_chunks else 32 if table is blobs else _CHUNK
    picked = table.columns if columns is None else [table.c[name] for name in columns]
    query = select(*picked)
    result = conn.execution_options(stream_results=True, yield_per=per).execute(
        query.order_by(*_ordered(table))
    )
    yield from result


def _weight(row: dict[str, object]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, bytes | memoryview)) + 64


def _copy_rows(
    rows: Iterator[Row[tuple[object, ...]]], out: Connection, table: Table
) -> tuple[int, str]:
    """Insert ``rows`` into ``table`` through ``out`` in bounded batches; (count, fingerprint)."""
    digest = hashlib.sha256()
    count = 0
    chunk: list[dict[str, object]] = []
    weight = 0
    for row in rows:
        digest.update(_canonical(row))
        values = dict(row._mapping)
        chunk.append(values)
        weight += _weight(values)
        count += 1
        if len(chunk) >= _CHUNK or weight >= _BATCH_BYTES:
            out.execute(insert(table), chunk)
            chunk, weight = [], 0
    if chunk:
        out.execute(insert(table), chunk)
    return count, digest.hexdigest()


def _canonical(row: Row[tuple[object, ...]]) -> bytes:
    values = []
    for value in row:
        if isinstance(value, bytes | memoryview):
            values.append({"b": bytes(value).hex()})
        elif isinstance(value, datetime):
            values.append({"t": value.isoformat()})
        else:
            values.append(value)
    return json.dumps(values, separators=(",", ":"), default=str).encode() + b"\n"


def fingerprint(conn: Connection) -> dict[str, str]:
    """SHA-256 per table over every row in canonical form: equal iff the ledgers are equal."""
    out = {}
    for table in _TABLES:
        digest = hashlib.sha256()
        for row in _rows(conn, table):
            digest.update(_canonical(row))
        out[table.name] = digest.hexdigest()
    return out


def backup(conn: Connection, path: Path, *, now: datetime) -> dict[str, int]:
    """Copy every row read through ``conn`` (one snapshot) into a new backup file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    target = create_engine(f"sqlite:///{tmp}", poolclass=NullPool)
    counts: dict[str, int] = {}
    digests: dict[str, str] = {}
    try:
        with target.begin() as out:
            out.exec_driver_sql("PRAGMA journal_mode=DELETE")
            metadata.create_all(out)
            out.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            out.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": HEAD_REVISION})
            out.execute(text("CREATE TABLE backup_info (name TEXT PRIMARY KEY, value TEXT)"))
            for table in _TABLES:
                counts[table.name], digests[table.name] = _copy_rows(_rows(conn, table), out, table)
            info = {
                "format": FORMAT,
                "revision": HEAD_REVISION,
                "created_at": now.isoformat(),
                "source_dialect": conn.dialect.name,
                "counts": json.dumps(counts),
                "fingerprints": json.dumps(digests),
            }
            out.execute(
                text("INSERT INTO backup_info VALUES (:n, :v)"),
                [{"n": k, "v": v} for k, v in info.items()],
            )
        target.dispose()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        target.dispose()
        tmp.unlink(missing_ok=True)
    return counts


def restore(conn: Connection, path: Path, *, replace: bool) -> dict[str, int]:
    """Copy a backup file's rows into the ledger behind ``conn`` (a write transaction)."""
    if not path.is_file():
        raise LedgerError(f"no backup file {path}")
    source = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool)
    try:
        with source.connect() as src:
            info = _info(src, path)
            if not replace:
                for table in _TABLES:
                    if conn.execute(select(func.count()).select_from(table)).scalar_one():
                        raise LedgerError(
                            f"the ledger is not empty ({table.name} has rows): "
                            "restore into an empty ledger or replace it"
                        )
            else:
                for table in reversed(_TABLES):
                    conn.execute(delete(table))
            expected = json.loads(info["fingerprints"])
            counts: dict[str, int] = {}
            for table in _TABLES:
                columns = _backup_columns(src, table)
                if columns is None:  # a table of a later revision than the backup: none
                    if table.name in expected:
                        raise LedgerError(f"backup {path.name}: table {table.name} is missing")
                    counts[table.name] = 0
                    continue
                count, digest = _copy_rows(_rows(src, table, columns), conn, table)
                if digest != expected.get(table.name):
                    raise LedgerError(
                        f"backup {path.name}: table {table.name} does not match its fingerprint"
                    )
                counts[table.name] = count
    finally:
        source.dispose()
    if conn.dialect.name == "postgresql":
        # Explicit IDs do not advance the sequences; new rows must not collide with restored.
        for table in _TABLES:
            if table is message_keys or table is blob_chunks:  # no serial id
                continue
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                )
            )
    return counts


def _backup_columns(src: Connection, table: Table) -> list[str] | None:
    """The columns the backup's ``table`` has, in the order of ours (``None``: no such table).
    A column of ours the backup lacks must have a default (see ROW_COMPATIBLE_REVISIONS)."""
    present = {str(r[1]) for r in src.exec_driver_sql(f"PRAGMA table_info({table.name})").all()}
    if not present:
        return None
    return [c.name for c in table.columns if c.name in present]


def _info(src: Connection, path: Path) -> dict[str, str]:
    try:
        rows = src.execute(text("SELECT name, value FROM backup_info")).all()
    except Exception as exc:  # not SQLite, or not our format: say so in one line
        raise LedgerError(f"{path.name} is not a kcbus ledger backup") from exc
    info = {str(n): str(v) for n, v in rows}
    if info.get("format") != FORMAT:
        raise LedgerError(f"{path.name}: unknown backup format {info.get('format')!r}")
    if info.get("revision") not in ROW_COMPATIBLE_REVISIONS:
        raise LedgerError(
            f"{path.name}: backup is of ledger schema {info.get('revision')}, "
            f"this kcbus writes {HEAD_REVISION} and restores "
            f"{', '.join(sorted(ROW_COMPATIBLE_REVISIONS))}"
        )
    return info
