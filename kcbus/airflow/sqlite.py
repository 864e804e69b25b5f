"""SQLite settings for Airflow's metadata DB in the embedded default (see ``airflow.cfg``).

Airflow's four components and every task process write to one SQLite file. With Python's
default busy timeout (5 s) a writer that waits behind another fails with "database is locked"
(an HTTP 500 from the api-server, a failed heartbeat). ``airflow.cfg`` points
``[database] sql_alchemy_connect_args`` here: writers wait up to :data:`BUSY_TIMEOUT` seconds
instead. :func:`use_wal` switches the file to write-ahead logging (SQLite WAL: readers never
block the writer and the writer never blocks readers); the mode is stored in the file, so it
is done once after ``airflow db migrate``. Production uses PostgreSQL, where neither applies.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["BUSY_TIMEOUT", "CONNECT_ARGS", "use_wal"]

BUSY_TIMEOUT = 30.0
#: ``sqlite3.connect`` keyword arguments (Airflow adds ``check_same_thread``).
CONNECT_ARGS: dict[str, object] = {"timeout": BUSY_TIMEOUT}


def use_wal(database: Path) -> str:
    """Put the SQLite file into WAL mode; returns the journal mode now in effect."""
    with sqlite3.connect(database, timeout=BUSY_TIMEOUT) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    return str(mode[0])
