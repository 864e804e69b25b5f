"""``kcbus demo``: the bus end to end on the embedded default, in one command.

Steps (each prints one line with its time):

1. state under ``var/demo`` (drop folders, ledger, claims) and Airflow's metadata DB are
   reset; keys are kept after the first run (RSA-4096 for the fitconnect partner is slow);
2. the demo partners' and the bus's keystores (``var/demo/keys``; passphrase generated once,
   file mode 0600);
3. ``airflow db migrate`` (SQLite under ``var/airflow``), then api-server, scheduler,
   dag-processor and triggerer as subprocesses, until healthy and the flow DAGs are loaded;
4. the demo partners send the traffic mix (:mod:`.traffic`) through the real adapters of the
   embedded default (drop folders; RabbitMQ with ``--rabbitmq``); the event-driven flows
   start by themselves (triggers on the inbound folders/queues), the daily tariff batch is
   started once by hand;
5. wait until every message is settled in the ledger, the recipients collecting meanwhile;
6. the summary per flow from the ledger, the ledger checked against the expectations, and
   where the Airflow UI is and how to log in.

With ``once`` everything started is stopped and the exit code says whether every message
ended as expected; otherwise Airflow keeps running until Ctrl-C. Either way every process is
stopped by PID on the way out, also on errors and Ctrl-C.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from kcbus.airflow.demo.stack import AirflowStack, free_port
from kcbus.airflow.demo.summary import check, render, summarize
from kcbus.airflow.demo.traffic import Expectation, send_demo_traffic
from kcbus.airflow.demo.world import Arrival, DemoWorld
from xoev import ConfigurationError

if TYPE_CHECKING:
    from kcbus.ledger import Ledger

__all__ = ["DemoOptions", "DemoResult", "find_home", "run_demo"]

FLOW_DAGS = ("kcbus_entlassbrief", "kcbus_bauantrag", "kcbus_tarifdaten", "kcbus_kommunen")
_BROKER_CONN = "kcbus_broker"


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    once: bool = False
    port: int = 8080
    timeout: float = 300.0
    large_mb: int = 64
    rabbitmq: str | None = None
    out: TextIO = sys.stdout


@dataclass(frozen=True)
class DemoResult:
    settled: bool
    problems: tuple[str, ...]
    summary: str

    @property
    def ok(self) -> bool:
        return self.settled and not self.problems


def find_home() -> Path:
    """The checkout this kcbus runs from (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[3]
    for candidate in (here, Path.cwd()):
        if (candidate / "airflow.cfg").is_file() and (candidate / "dags").is_dir():
            return candidate
    raise ConfigurationError("no airflow.cfg and dags/ here: run kcbus demo in the kcbus checkout")


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.start:6.1f}s] {text}\n")
        self.out.flush()


def _passphrase(keys: Path) -> str:
    file = keys / ".passphrase"
    if not file.exists():
        keys.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return file.read_text().strip()


def _rabbitmq_config(source: Path, target: Path, login: str) -> Path:
    """The demo config with its event-driven drop folders moved to RabbitMQ queues (one per
    partner and direction, through the Airflow Connection ``kcbus_broker``).

    All demo partners publish with the one broker login given, so that login is each one's
    expected transport identity (``peer``); the envelope signature still proves the sender."""
    target.mkdir(parents=True, exist_ok=True)
    claims = "claim_check=${KCBUS_VAR}/claims"
    for file in sorted(source.glob("*.yaml")):
        text = re.sub(
            r"( *)receive_from: file://\$\{KCBUS_VAR\}/drop/von-([a-z0-9-]+)",
            lambda m: (f"{m.group(1)}receive_from: conn://{_BROKER_CONN}?inbox=bus-{m.group(2)}"
                       f"&{claims}\n{m.group(1)}peer: {login}"),
            file.read_text(encoding="utf-8"),
        )
        text = re.sub(r"file://\$\{KCBUS_VAR\}/drop/an-([a-z0-9-]+)",
                      f"conn://{_BROKER_CONN}?{claims}", text)
        (target / file.name).write_text(text, encoding="utf-8")
    return target


def _reset(home: Path, var: Path) -> None:
    """A fresh demo: no envelopes, no ledger, and no DAG runs of an earlier demo that the
    scheduler would resume (the Airflow metadata DB is recreated by ``db migrate``)."""
    for name in ("drop", "batch", "claims", "scratch", ".config", "config-rabbitmq"):
        shutil.rmtree(var / name, ignore_errors=True)
    for ledger_file in var.glob("ledger.sqlite*"):
        ledger_file.unlink()
    for db_file in (home / "var" / "airflow").glob("airflow.db*"):
        db_file.unlink()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the ``finally`` that stops Airflow always runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_dags(stack: AirflowStack, say: Callable[[str], None], timeout: float) -> str:
    token = stack.token()
    deadline = time.monotonic() + timeout
    while True:
        answer = stack.api("GET", "/api/v2/dags?tags=kcbus&limit=100", token=token)
        dags = answer.get("dags")
        loaded = {
            str(d.get("dag_id")): bool(d.get("is_paused"))
            for d in dags if isinstance(d, dict)
        } if isinstance(dags, list) else {}
        if all(dag_id in loaded for dag_id in FLOW_DAGS):
            paused = [dag_id for dag_id in FLOW_DAGS if loaded[dag_id]]
            for dag_id in paused:
                stack.api("PATCH", f"/api/v2/dags/{dag_id}", token=token,
                          body={"is_paused": False})
            return token
        if time.monotonic() > deadline:
            missing = sorted(set(FLOW_DAGS) - set(loaded))
            raise ConfigurationError(
                f"flow DAGs not loaded after {timeout:.0f} s: {', '.join(missing)} "
                "(see var/airflow/logs/components/dag-processor.log)"
            )
        time.sleep(1.0)


def _settled(ledger: Ledger, expectations: list[Expectation]) -> tuple[bool, int]:
    """Whether every sent message is settled and nothing (receipts) waits for delivery."""
    from kcbus._errors import NotFound
    from kcbus.ledger import SETTLED

    waiting = 0
    for exp in expectations:
        try:
            if ledger.get(exp.sent.envelope_id).status not in SETTLED:
                waiting += 1
        except NotFound:
            waiting += 1
    due = ledger.due_destinations(datetime.now(UTC) + timedelta(days=365))
    return waiting == 0 and not due, waiting


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the demo (see the module docstring); raises only for setup problems."""
    say = _Printer(options.out)
    home = options.home.resolve()
    var = home / "var" / "demo"
    keys = var / "keys"
    _reset(home, var)
    passphrase = _passphrase(keys)
    env = {
        "KCBUS_HOME": str(home),
        "KCBUS_VAR": str(var),
        "KCBUS_CONFIG": str(home / "config"),
        "KCBUS_LEDGER": f"sqlite:///{var / 'ledger.sqlite'}",
        "KCBUS_KEYSTORE_PASSPHRASE": passphrase,
    }
    connections: dict[str, str] = {}
    if options.rabbitmq:
        # The broker's credentials live in an Airflow Connection (never in a trigger's kwargs
        # or the config): the flows watch conn://kcbus_broker queues through it.
        login = urlsplit(options.rabbitmq).username or "guest"
        env["KCBUS_CONFIG"] = str(
            _rabbitmq_config(home / "config", var / "config-rabbitmq", login)
        )
        env[f"AIRFLOW_CONN_{_BROKER_CONN.upper()}"] = options.rabbitmq
        connections[_BROKER_CONN] = options.rabbitmq
    os.environ.update(env)

    from kcbus.airflow.settings import load_config

    config = load_config()
    world = DemoWorld(config, keys / "partners", passphrase, connections=connections)
    say("keys: creating the demo partners' identities (first run only: RSA-4096 takes a while)")
    world.prepare_keys(datetime.now(UTC))
    say(f"keys: {len(config.partners)} partners + the bus, in {keys}")

    stack = AirflowStack(home=home, port=free_port(options.port), extra_env=env)
    expectations: list[Expectation] = []
    arrivals: list[Arrival] = []
    with _terminate_as_interrupt(), stack:
        say("airflow: db migrate (SQLite under var/airflow)")
        stack.migrate()
        say("airflow: starting api-server, scheduler, dag-processor, triggerer")
        stack.start()
        waited = stack.wait_healthy()
        say(f"airflow: healthy after {waited:.0f} s at {stack.url}")
        token = _wait_for_dags(stack, say, timeout=120)
        say(f"airflow: {len(FLOW_DAGS)} flow DAGs loaded and unpaused")

        scratch = var / "scratch"
        where = "RabbitMQ and drop folders" if options.rabbitmq else "drop folders"
        say(f"partners: sending the demo mix through {where} "
            f"(one {options.large_mb} MiB building plan)")
        expectations = send_demo_traffic(
            world, now=lambda: datetime.now(UTC), scratch=scratch, large_mb=options.large_mb
        )
        say(f"partners: {len(expectations)} envelopes sent")
        stack.api("POST", "/api/v2/dags/kcbus_tarifdaten/dagRuns", token=token,
                  body={"logical_date": None, "note": "kcbus demo: today's tariff batch"})
        say("airflow: started today's kcbus_tarifdaten batch run (daily schedule)")

        from kcbus.ledger import Ledger

        ledger = Ledger()
        deadline = time.monotonic() + options.timeout
        settled, waiting = False, len(expectations)
        last_report = 0.0
        while time.monotonic() < deadline:
            for partner, p in config.partners.items():
                if p.deliver_to:
                    arrivals.extend(world.collect(partner, datetime.now(UTC), scratch))
            settled, waiting = _settled(ledger, expectations)
            if settled:
                break
            if time.monotonic() - last_report > 10:
                say(f"waiting: {waiting} of {len(expectations)} messages not settled yet")
                last_report = time.monotonic()
            time.sleep(0.5)
        for partner, p in config.partners.items():
            if p.deliver_to:
                arrivals.extend(world.collect(partner, datetime.now(UTC), scratch))
        world.close()
        with ledger:
            summaries = summarize(ledger)
            problems = tuple(check(ledger, expectations))
        table = render(summaries)
        say("settled: every message" if settled else f"NOT settled: {waiting} messages open")
        options.out.write("\n" + table + "\n\n")
        messages = sum(1 for a in arrivals if a.receipt is None)
        receipts = len(arrivals) - messages
        options.out.write(
            f"partners received {messages} messages and {receipts} receipts\n"
        )
        for problem in problems:
            options.out.write(f"UNEXPECTED: {problem}\n")
        admin = stack.passwords().get("admin", "(see var/airflow/passwords.json)")
        options.out.write(
            f"\nAirflow UI: {stack.url}  (user admin, password {admin}; "
            f"all generated passwords: {stack.passwords_file()})\n"
            "Messages: the 'Messages' entry in the UI's navigation (kcbus operator view)\n"
            f"Ledger on the command line: KCBUS_LEDGER={env['KCBUS_LEDGER']} "
            ".venv/bin/kcbus ledger list\n"
        )
        options.out.flush()
        result = DemoResult(settled=settled, problems=problems, summary=table)
        if not options.once:
            say("Airflow keeps running; Ctrl-C stops it")
            try:
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        say("stopping Airflow")
    say("stopped")
    return result
