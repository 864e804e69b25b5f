"""A TCP proxy that misbehaves on purpose, in front of a real server (TLS passes through it).

Because it works below TLS, mutual TLS between client and server stays intact: the server
really receives and processes the request, and the proxy then loses or withholds the answer,
as a broken network or a stuck peer would.

Faults (for the next connection only, then it passes traffic again):

``cut``   forward ``after_bytes`` of the request, then close both sides (a body cut short)
``drop``  forward the request, then close the client's connection once the server answers
``hold``  forward the request, never forward the answer (the client times out)

``drop`` and ``hold`` arm once ``after_bytes`` have gone from client to server, and, if given,
once ``answer_when()`` holds: the proxy sees only TLS records, and a TLS 1.3 server sends its
session tickets whenever its thread gets to them, so under load bytes from the server after the
threshold are not necessarily the answer. Anything the server sends before the fault arms passes.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

Fault = Literal["cut", "drop", "hold"]
_Armed = tuple[Fault, int, Callable[[], bool] | None]


class FaultyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._next: _Armed | None = None
        self.faults_done: list[Fault] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def fail_next(self, fault: Fault, *, after_bytes: int,
                  answer_when: Callable[[], bool] | None = None) -> None:
        with self._lock:
            self._next = (fault, after_bytes, answer_when)

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                fault, self._next = self._next, None
            thread = threading.Thread(target=self._pipe, args=(client, fault), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pipe(self, client: socket.socket, armed: _Armed | None) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        sockets = [client, server]
        sent = 0
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(sockets, [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if armed is not None and armed[0] == "cut":
                            data = data[:max(0, armed[1] - sent)]
                        server.sendall(data)
                        sent += len(data)
                        if armed is not None and armed[0] == "cut" and sent >= armed[1]:
                            self.faults_done.append("cut")
                            return
                    elif self._answer_lost(armed, sent):
                        assert armed is not None
                        if armed[0] == "drop":
                            self.faults_done.append("drop")
                            return  # the answer is lost: close both sides
                        if "hold" not in self.faults_done:
                            self.faults_done.append("hold")
                        # swallow the answer; the client's read timeout fires
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    @staticmethod
    def _answer_lost(armed: _Armed | None, sent: int) -> bool:
        if armed is None or armed[0] == "cut" or sent < armed[1]:
            return False
        return armed[2] is None or armed[2]()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(2)
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
