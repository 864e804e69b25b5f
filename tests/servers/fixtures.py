"""Session-scoped fixtures that start real servers on localhost (registered in tests/conftest.py).

Each server starts only when a test asks for its fixture (never at import time), runs as its own
process group, and is stopped by PID at the end of the session. A server that cannot start FAILS
the requesting test with the reason; nothing is skipped silently. Binaries come from Debian
packages that ``scripts/install-test-servers`` installs.

=================  ==========================================================================
fixture            gives
=================  ==========================================================================
``rabbitmq``       :class:`~tests.servers.rabbitmq.RabbitMQ`: ``.url`` (``amqp://...``),
                   ``.restart()`` / ``.stop()`` / ``.start()`` for fault tests, ``.ctl(...)``
``sftp_server``    :class:`~tests.servers.sshd.SshServer`: ``host``, ``port``, ``user``,
                   ``private_key``, ``known_hosts``, ``root`` (data dir), ``url(subdir)``,
                   ``drop_connections()``
``https_pki``      :class:`~tests.servers.pki.TestPKI`: ``ca_cert``, ``server_cert``,
                   ``server_key``, ``client(partner) -> ClientCert(cert, key)``
``postgres``       :class:`~tests.servers.postgres.PostgresServer`: ``.url`` (SQLAlchemy
                   ``postgresql+psycopg://...`` of a database made for the session;
                   ``str(postgres)`` is the same URL), ``.new_database()`` for another one
``postgres_url``   function-scoped: the URL of a fresh, empty database for this one test
``chromium``       :class:`~tests.servers.chromium.Chromium`: ``binary``, ``driver``, ``flags``
=================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import pytest

from tests.servers._process import ServerStartError
from tests.servers.chromium import Chromium, find_chromium
from tests.servers.pki import TestPKI, make_pki
from tests.servers.postgres import PostgresServer, postgres_cluster
from tests.servers.rabbitmq import RabbitMQ, rabbitmq_node
from tests.servers.sshd import SshServer, sshd_server

__all__ = ["chromium", "https_pki", "postgres", "postgres_url", "rabbitmq", "sftp_server"]

T = TypeVar("T")


def _serve(manager: AbstractContextManager[T], what: str) -> Iterator[T]:
    try:
        server = manager.__enter__()
    except ServerStartError as exc:
        pytest.fail(f"cannot start {what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    yield from _serve(rabbitmq_node(), "RabbitMQ")


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SshServer]:
    yield from _serve(sshd_server(), "OpenSSH sshd")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from _serve(postgres_cluster(), "PostgreSQL")


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(scope="session")
def https_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    try:
        return find_chromium()
    except ServerStartError as exc:
        pytest.fail(f"no usable Chromium: {exc}", pytrace=False)
