"""The real-server fixtures give working servers that other tests can rely on."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest
import sqlalchemy as sa
from kombu.connection import Connection

from tests.servers.chromium import Chromium
from tests.servers.pki import PARTNER_URI_PREFIX, TestPKI
from tests.servers.postgres import PostgresServer
from tests.servers.rabbitmq import RabbitMQ
from tests.servers.sshd import SshServer

pytestmark = pytest.mark.real


def test_rabbitmq_moves_a_persistent_message(rabbitmq: RabbitMQ) -> None:
    with Connection(rabbitmq.url) as conn:  # type: ignore[no-untyped-call]
        queue = conn.SimpleQueue("fixture-probe")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"n": 1}
    assert "fixture-probe" in rabbitmq.ctl("list_queues", "name")


def _ssh(server: SshServer, known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(server.host, port=server.port, username=server.user,
                   key_filename=str(server.private_key), look_for_keys=False,
                   allow_agent=False, timeout=10)
    return client


def test_sftp_server_accepts_the_key_and_stores_files(sftp_server: SshServer) -> None:
    client = _ssh(sftp_server, sftp_server.known_hosts)
    try:
        sftp = client.open_sftp()
        sftp.putfo(io.BytesIO(b"probe"), str(sftp_server.root / "probe.txt"))
        assert (sftp_server.root / "probe.txt").read_bytes() == b"probe"
    finally:
        client.close()


def test_sftp_server_is_rejected_without_its_host_key(sftp_server: SshServer,
                                                       tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        _ssh(sftp_server, empty)


def test_postgres_gives_fresh_databases(postgres: PostgresServer, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()
    assert postgres_url != postgres.url and str(postgres) == postgres.url


def test_https_pki_client_certificate_names_the_partner(https_pki: TestPKI) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(https_pki.ca_cert))
    server_ctx.load_cert_chain(https_pki.server_cert, https_pki.server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.update(tls.getpeercert() or {})
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    client = https_pki.client("gemeinde-a")
    client_ctx = ssl.create_default_context(cafile=str(https_pki.ca_cert))
    client_ctx.load_cert_chain(client.cert, client.key)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.recv(2) == b"ok"
    thread.join(10)
    listener.close()
    assert ("URI", PARTNER_URI_PREFIX + "gemeinde-a") in seen["subjectAltName"]  # type: ignore[operator]


def test_chromium_is_installed(chromium: Chromium) -> None:
    assert chromium.version.startswith("Chromium")
    out = subprocess.run([str(chromium.driver), "--version"], capture_output=True, check=True)
    assert out.stdout.startswith(b"ChromeDriver")
