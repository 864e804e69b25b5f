"""A private RabbitMQ node on 127.0.0.1 for tests and benchmarks.

Everything the node touches lives under its own base directory: Mnesia database, logs, config,
Erlang cookie (``HOME``), an empty plugin list. Node name, AMQP port, distribution port and the
epmd port are chosen per node, so several test sessions on one machine never meet, and epmd is
started by us in the foreground (not as a daemon), so it too is stopped by PID.

``restart()`` keeps the Mnesia directory: durable queues and persistent messages survive it, as
on a production broker restarted by an operator (used by the fault tests).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers._process import (
    ServerStartError,
    Watchdog,
    free_port,
    kill_group,
    make_base_dir,
    need_executable,
    remove_base_dir,
    wait_port,
)

__all__ = ["RabbitMQ", "rabbitmq_node"]

_BIN = Path("/usr/lib/rabbitmq/bin")
_EPMD = Path("/usr/bin/epmd")
_START_TIMEOUT = 90.0


@dataclass
class RabbitMQ:
    """A running node. ``url`` is the kombu/AMQP URL of its default vhost."""

    base: Path
    port: int
    dist_port: int
    epmd_port: int
    node: str
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _watchdog: Watchdog | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def env(self) -> dict[str, str]:
        b = self.base
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(b),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(b / "rabbitmq.pid"),
        }

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> ARGS`` against this node; returns stdout."""
        result = subprocess.run(
            [str(_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env, cwd=self.base, capture_output=True, timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()[-400:]}"
            )
        return result.stdout.decode(errors="replace")

    def start(self) -> None:
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(
                [str(_EPMD), "-port", str(self.epmd_port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            if self._watchdog is not None:
                self._watchdog.group(self._epmd.pid)
            wait_port(self.epmd_port, timeout=10, what="epmd", proc=self._epmd)
        log = self.base / "server.log"
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(_BIN / "rabbitmq-server")], env=self.env, cwd=self.base,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if self._watchdog is not None:
            self._watchdog.group(self._proc.pid)
        # The AMQP listener opens late in the boot sequence; poll it cheaply, then confirm with
        # rabbitmqctl await_startup (each rabbitmqctl call costs ~1 s of CLI start-up).
        wait_port(self.port, timeout=_START_TIMEOUT, what="rabbitmq-server",
                  proc=self._proc, log=log)
        self.ctl("await_startup", "--timeout", str(int(_START_TIMEOUT)))

    def stop(self) -> None:
        """Stop the broker process group (SIGTERM lets Erlang shut down cleanly)."""
        if self._proc is not None:
            kill_group(self._proc)
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port and data (durable state survives)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._epmd is not None:
            kill_group(self._epmd, timeout=5)
            self._epmd = None


@contextmanager
def rabbitmq_node() -> Iterator[RabbitMQ]:
    """Start a fresh node; stop it (and its epmd) and remove its files on exit."""
    need_executable(_BIN / "rabbitmq-server", "rabbitmq-server")
    need_executable(_EPMD, "erlang-base")
    base = make_base_dir("kcbus-rabbitmq-")
    port = free_port()
    node = RabbitMQ(base=base, port=port, dist_port=free_port(), epmd_port=free_port(),
                    node=f"kcbus{port}@localhost")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {port}\n"
        # guest may log in from localhost only (RabbitMQ's default, kept explicit)
        "loopback_users.guest = true\n"
        # the broker's log goes to server.log in the base dir (the fixture's failure reason)
        "log.console = true\nlog.file = false\n"
    )
    (base / "rabbitmq-env.conf").write_text("")
    (base / "enabled_plugins").write_text("[].\n")
    cookie = base / ".erlang.cookie"
    cookie.write_text(os.urandom(16).hex().upper())
    cookie.chmod(0o400)
    node._watchdog = Watchdog(base)
    try:
        node.start()
        yield node
    finally:
        node.close()
        node._watchdog.stop()
        remove_base_dir(base)
