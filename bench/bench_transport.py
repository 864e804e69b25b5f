"""Envelopes per second through each transport adapter against its real server (20 KB).

One envelope = send + receive + read + acknowledge. Each adapter is measured beside the raw
library doing the same work on the same server in the same run, without the adapter's
guarantees on top:

* ``amqp`` (RabbitMQ) beside kombu's raw publish/consume of persistent messages with manual
  acks and the same prefetch. The adapter additionally waits for publisher confirms (batched:
  ``send_many`` of 200); the issue's goal: ratio ≥ 0.7. A second figure compares one ``send()``
  per envelope with kombu confirming each publish (``confirm_publish``);
* ``sftp`` (OpenSSH) beside raw paramiko ``putfo`` + ``getfo`` + ``remove`` (no temporary
  name, no claim, no done folder);
* ``https`` (the inbox with mutual TLS) beside raw httpx POSTs of the same bodies to a bare
  stdlib TLS server that reads and discards them (no spool, no fsync, no receive side);
* ``file`` beside plain ``write`` + ``read`` + ``unlink`` (no fsync, no claim).

The servers come from tests/servers (started here, stopped by PID at the end).
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bench._harness import Figure, one_core

SIZE = 20 * 1024


def _timed(fn: Callable[[], int]) -> float:
    """Envelopes per second of one run of ``fn`` (which returns how many it moved)."""
    start = time.perf_counter()
    moved = fn()
    return moved / (time.perf_counter() - start)


def _best(fn: Callable[[], int], rounds: int) -> float:
    return max(_timed(fn) for _ in range(rounds))


def _adapter_cycle(open_sender: Callable[[], object], open_receiver: Callable[[], object],
                   recipient: str, n: int, *, batch: int = 1) -> Callable[[], int]:
    from adapters.transport import Outbound, Transport

    body = os.urandom(SIZE)

    def run() -> int:
        sender = open_sender()
        receiver = open_receiver()
        assert isinstance(sender, Transport) and isinstance(receiver, Transport)
        tag = uuid.uuid4().hex[:8]
        with sender, receiver:
            items = [Outbound(f"b{tag}-{i}", recipient, data=body) for i in range(n)]
            for start in range(0, n, batch):
                if batch == 1:
                    sender.send(items[start])
                else:
                    sender.send_many(items[start:start + batch])
            moved = 0
            while moved < n and (got := receiver.receive(200, timeout=10)):
                for delivery in got:
                    delivery.read()
                    receiver.acknowledge(delivery)
                moved += len(got)
        return moved

    return run


# -- AMQP ---------------------------------------------------------------------------------------

def _kombu_raw(url: str, n: int, *, confirm: bool) -> Callable[[], int]:
    from kombu.connection import Connection
    from kombu.entity import Exchange, Queue
    from kombu.messaging import Consumer, Producer

    body = os.urandom(SIZE)

    def run() -> int:
        tag = uuid.uuid4().hex[:8]
        exchange = Exchange(f"raw-{tag}", "direct", durable=True)  # type: ignore[no-untyped-call]
        queue = Queue(f"raw-{tag}", exchange=exchange, routing_key="raw",  # type: ignore[no-untyped-call]
                      durable=True)
        with Connection(url, transport_options={"confirm_publish": confirm}) as conn:  # type: ignore[no-untyped-call]
            producer = Producer(conn.default_channel, exchange=exchange)  # type: ignore[no-untyped-call]
            for i in range(n):
                producer.publish(body, routing_key="raw", delivery_mode=2,  # type: ignore[no-untyped-call]
                                 content_type="application/octet-stream",
                                 content_encoding="binary", declare=[queue],
                                 message_id=f"{tag}-{i}")
            got = 0

            def on_message(message: object) -> None:
                nonlocal got
                message.ack()  # type: ignore[attr-defined]
                got += 1

            channel = conn.channel()
            channel.basic_qos(0, 256, False)
            with Consumer(channel, queues=[queue], on_message=on_message):  # type: ignore[no-untyped-call]
                while got < n:
                    conn.drain_events(timeout=10)
            queue(conn.default_channel).delete()  # type: ignore[no-untyped-call]
            exchange(conn.default_channel).delete()  # type: ignore[no-untyped-call]
        return got

    return run


def _amqp(n: int, rounds: int) -> Iterator[Figure]:
    from adapters.transport import connect
    from tests.servers.rabbitmq import rabbitmq_node

    with rabbitmq_node() as broker:
        def adapter(batch: int) -> Callable[[], int]:
            def cycle() -> int:
                exchange = f"bench-{uuid.uuid4().hex[:8]}"
                return _adapter_cycle(
                    lambda: connect(broker.url, exchange=exchange),
                    lambda: connect(broker.url, exchange=exchange, inbox="bus"),
                    "bus", n, batch=batch)()
            return cycle

        raw = _kombu_raw(broker.url, n, confirm=False)
        raw_confirmed = _kombu_raw(broker.url, n, confirm=True)
        raw()  # warm up the broker (queue processes, disk)
        best = dict.fromkeys(("raw", "raw_confirmed", "batched", "single"), 0.0)
        with one_core():
            for _ in range(rounds):  # interleaved, so drift hits all alike
                best["raw"] = max(best["raw"], _timed(raw))
                best["batched"] = max(best["batched"], _timed(adapter(200)))
                best["raw_confirmed"] = max(best["raw_confirmed"], _timed(raw_confirmed))
                best["single"] = max(best["single"], _timed(adapter(1)))
    # the adapter waits for publisher confirms (raw kombu here does not): send_many in
    # batches of 200, as the runtime delivers
    yield Figure("transport amqp (RabbitMQ) envelopes/s, 20 KB, confirmed", best["batched"],
                 "env/s", "kombu raw publish+consume", best["raw"], goal=0.7)
    yield Figure("transport amqp, one send() per envelope", best["single"], "env/s",
                 "kombu raw, confirm each publish", best["raw_confirmed"])


# -- SFTP ---------------------------------------------------------------------------------------

def _sftp(n: int, rounds: int) -> Iterator[Figure]:
    import io

    import paramiko

    from adapters.transport import connect
    from tests.servers.sshd import sshd_server

    with sshd_server() as server:
        options = {"key_file": str(server.private_key), "known_hosts": str(server.known_hosts)}

        def folder() -> Path:
            path = server.root / uuid.uuid4().hex[:8]
            path.mkdir()
            server.chown_to_user(path)
            return path

        def adapter() -> int:
            url = server.url(folder().name)
            return _adapter_cycle(lambda: connect(url, **options),
                                  lambda: connect(url, **options), "bus", n)()

        body = os.urandom(SIZE)

        def raw() -> int:
            path = folder()
            client = paramiko.SSHClient()
            client.load_host_keys(str(server.known_hosts))
            client.connect(server.host, port=server.port, username=server.user,
                           key_filename=str(server.private_key), look_for_keys=False,
                           allow_agent=False)
            try:
                sftp = client.open_sftp()
                for i in range(n):
                    sftp.putfo(io.BytesIO(body), f"{path}/{i}.env", confirm=False)
                for name in sftp.listdir(str(path)):
                    sink = io.BytesIO()
                    sftp.getfo(f"{path}/{name}", sink)
                    sftp.remove(f"{path}/{name}")
            finally:
                client.close()
            return n

        with one_core():
            baseline = _best(raw, rounds)
            value = _best(adapter, rounds)
    yield Figure("transport sftp (OpenSSH) envelopes/s, 20 KB", value, "env/s",
                 "paramiko raw put+get+remove", baseline)


# -- HTTPS --------------------------------------------------------------------------------------

def _https(n: int, rounds: int, work: Path) -> Iterator[Figure]:
    import httpx

    from adapters.transport import connect
    from tests.servers.pki import make_pki

    pki = make_pki(work / "pki")
    client_cert = pki.client("bench")
    body = os.urandom(SIZE)

    class Discard(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    bare = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    bare.socket = context.wrap_socket(bare.socket, server_side=True)
    threading.Thread(target=bare.serve_forever, daemon=True).start()

    def raw() -> int:
        client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        client_ctx.load_cert_chain(client_cert.cert, client_cert.key)
        with httpx.Client(verify=client_ctx) as client:
            for i in range(n):
                client.post(f"https://127.0.0.1:{bare.server_address[1]}/envelopes",
                            content=body, headers={"Idempotency-Key": f"e{i}"})
        return n

    def adapter(fsync: bool = True) -> int:
        spool = work / uuid.uuid4().hex[:8]
        inbox = connect("https://127.0.0.1:0/kcbus", listen=True,
                        cert_file=str(pki.server_cert), key_file=str(pki.server_key),
                        client_ca=str(pki.ca_cert), spool_dir=str(spool),
                        sender_of=lambda stream: "bench", fsync=fsync)
        url: str = inbox.url  # type: ignore[attr-defined]
        try:
            return _adapter_cycle(
                lambda: connect(url, cert_file=str(client_cert.cert),
                                key_file=str(client_cert.key), ca_file=str(pki.ca_cert)),
                lambda: connect(url, listen=True, serve=False, spool_dir=str(spool)),
                "bus", n)()
        finally:
            inbox.close()

    try:
        with one_core():
            baseline = _best(raw, rounds)
            value = _best(adapter, rounds)
            no_fsync = _best(lambda: adapter(fsync=False), rounds)
    finally:
        bare.shutdown()
        bare.server_close()
    yield Figure("transport https (mTLS inbox) envelopes/s, 20 KB", value, "env/s",
                 "httpx raw POST to a bare TLS server", baseline)
    yield Figure("transport https, spool fsync off (adapter cost)", no_fsync, "env/s",
                 "httpx raw POST to a bare TLS server", baseline)


# -- file drop ----------------------------------------------------------------------------------

def _file(n: int, rounds: int, work: Path) -> Iterator[Figure]:
    from adapters.transport import connect

    body = os.urandom(SIZE)

    def adapter(fsync: bool = True) -> int:
        url = f"file://{work / uuid.uuid4().hex[:8]}"
        return _adapter_cycle(lambda: connect(url, fsync=fsync), lambda: connect(url),
                              "bus", n)()

    def raw() -> int:
        folder = work / uuid.uuid4().hex[:8]
        folder.mkdir()
        for i in range(n):
            (folder / f"{i}.env").write_bytes(body)
        for path in list(folder.iterdir()):
            path.read_bytes()
            path.unlink()
        return n

    with one_core():
        baseline = _best(raw, rounds)
        value = _best(adapter, rounds)
        no_fsync = _best(lambda: adapter(fsync=False), rounds)
    yield Figure("transport file drop envelopes/s, 20 KB (fsync)", value, "env/s",
                 "plain write+read+unlink", baseline)
    yield Figure("transport file drop, fsync off (adapter cost)", no_fsync, "env/s",
                 "plain write+read+unlink", baseline)


def run(args: argparse.Namespace) -> Iterable[Figure]:
    n = 200 if args.quick else 1000
    rounds = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="kcbus-bench-transport-"))
    figures: list[Figure] = []
    try:
        figures += _amqp(n, rounds)
        figures += _sftp(n, rounds)
        figures += _https(n, rounds, work)
        figures += _file(n, rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures
