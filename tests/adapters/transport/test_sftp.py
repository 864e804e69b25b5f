"""sftp:// on a real OpenSSH server: dropped connections resume, host keys are checked."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import pytest

from adapters.transport import Outbound, TransportConfigError, connect
from adapters.transport.sftp import SftpTransport
from tests.servers.sshd import SshServer

pytestmark = pytest.mark.real


def _folder(server: SshServer) -> Path:
    folder = server.root / f"drop-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    server.chown_to_user(folder)
    return folder


def _open(server: SshServer, folder: Path, **options: object) -> SftpTransport:
    transport = connect(server.url(folder.name), key_file=str(server.private_key),
                        known_hosts=str(server.known_hosts), **options)
    assert isinstance(transport, SftpTransport)
    return transport


def test_dropped_connection_mid_upload_resumes_and_verifies(sftp_server: SshServer,
                                                            tmp_path: Path) -> None:
    folder = _folder(sftp_server)
    source = tmp_path / "plaene.env"
    block = hashlib.sha256(b"plan").digest() * 1024  # 32 KiB
    with source.open("wb") as out:
        for i in range(1280):  # 40 MiB
            out.write(i.to_bytes(4, "big") + block[4:])
    part = folder / ".tmp" / "plaene.env.part"
    sizes: list[int] = []
    dropped = threading.Event()

    def cut_when_half_there() -> None:
        while not dropped.is_set():
            size = part.stat().st_size if part.exists() else 0
            sizes.append(size)
            if size > 10 << 20:
                dropped.set()
                sftp_server.drop_connections()
            time.sleep(0.005)

    with _open(sftp_server, folder, retry_interval=0.1) as transport:
        watcher = threading.Thread(target=cut_when_half_there, daemon=True)
        watcher.start()
        transport.send(Outbound.from_file("plaene", "landratsamt", source))
        dropped.set()
        watcher.join(5)
    assert any(s > 10 << 20 for s in sizes), "the connection was not cut mid-upload"
    after_cut = sizes[next(i for i, s in enumerate(sizes) if s > 10 << 20):]
    assert after_cut == sorted(after_cut)  # resumed from where it was: never started over
    published = folder / "plaene.env"
    assert published.read_bytes() == source.read_bytes()
    assert not part.exists()
    with _open(sftp_server, folder) as receiver:
        [delivery] = receiver.receive(10)
        assert delivery.envelope_id == "plaene"
        receiver.acknowledge(delivery)


def test_dropped_connection_between_calls_is_reconnected(sftp_server: SshServer) -> None:
    folder = _folder(sftp_server)
    with _open(sftp_server, folder) as transport:
        transport.send(Outbound("e1", "x", data=b"one"))
        assert sftp_server.drop_connections() >= 1
        transport.send(Outbound("e2", "x", data=b"two"))
        got = transport.receive(10)
        assert sorted(d.envelope_id or "" for d in got) == ["e1", "e2"]
        sftp_server.drop_connections()
        for delivery in got:
            transport.acknowledge(delivery)
    assert sorted(p.name for p in (folder / ".done").iterdir()) == ["e1.env", "e2.env"]


def test_unknown_host_key_is_refused(sftp_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(TransportConfigError) as info:
        connect(sftp_server.url(), key_file=str(sftp_server.private_key),
                known_hosts=str(empty))
    assert info.value.option == "known_hosts"


def test_changed_host_key_is_refused(sftp_server: SshServer, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    impostor = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sftp_server.port} {impostor}\n")
    with pytest.raises(TransportConfigError, match="host key does not match"):
        connect(sftp_server.url(), key_file=str(sftp_server.private_key),
                known_hosts=str(known))


def test_a_key_the_server_does_not_know_is_refused(sftp_server: SshServer,
                                                   tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = tmp_path / "stranger"
    stranger.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    with pytest.raises(TransportConfigError, match="login refused"):
        connect(sftp_server.url(), key_file=str(stranger),
                known_hosts=str(sftp_server.known_hosts))


def test_a_half_uploaded_partner_file_is_not_picked_up(sftp_server: SshServer) -> None:
    folder = _folder(sftp_server)
    (folder / "antrag.env.filepart").write_bytes(b"WinSCP still writing")
    with _open(sftp_server, folder) as transport:
        assert transport.receive(10) == []


def test_the_key_file_is_required() -> None:
    with pytest.raises(TransportConfigError) as info:
        connect("sftp://kcbus@127.0.0.1:2222/drop")
    assert info.value.option == "key_file"
