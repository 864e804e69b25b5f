"""Every demo flow once more under ``dag.test()``, against the real servers of the adapter tests.

The demo config with its endpoints moved: the event-driven partners' drop folders become
queues on a real RabbitMQ, reached through an Airflow Connection (``conn://kcbus_rabbit``: the
hook builds the adapter from it, credentials never in the config); the tariff batch folders
move to a real OpenSSH SFTP server; the ledger is a real PostgreSQL database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kcbus.airflow.demo.summary import check, summarize
from kcbus.airflow.demo.traffic import send_demo_traffic
from kcbus.airflow.demo.world import DemoWorld
from tests.dags.scenario import (
    PASSPHRASE,
    T0,
    Clock,
    Keys,
    collect_all,
    expect_arrivals,
    make_config,
    unique,
)
from tests.servers.rabbitmq import RabbitMQ
from tests.servers.sshd import SshServer

CONN = "kcbus_rabbit"


def inbound_conn(partner: str) -> str:
    """The Connection through which the bus consumes ``partner``'s queue."""
    return f"rabbit_from_{partner.replace('-', '_')}"


def real_endpoints(sftp: SshServer, claims: Path, namespace: str) -> Callable[[str], str]:
    """drop/ → RabbitMQ queues (own exchange per test), batch/ → SFTP folders."""
    sftp_options = f"key_file={sftp.private_key}&known_hosts={sftp.known_hosts}"
    queue_options = f"exchange={namespace}&claim_check={claims}"

    def rewrite(text: str) -> str:
        text = re.sub(
            r"file://\$\{KCBUS_VAR\}/drop/von-([a-z0-9-]+)",
            lambda m: f"conn://{inbound_conn(m.group(1))}?inbox=bus-{m.group(1)}&{queue_options}",
            text,
        )
        text = re.sub(r"file://\$\{KCBUS_VAR\}/drop/an-([a-z0-9-]+)",
                      f"conn://{CONN}?{queue_options}", text)
        return re.sub(r"file://\$\{KCBUS_VAR\}/batch/((von|an)-[a-z0-9-]+)",
                      lambda m: f"{sftp.url(f'{namespace}/{m.group(1)}')}?{sftp_options}",
                      text)

    return rewrite


@pytest.fixture
def real_env(
    tmp_path: Path,
    demo_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: None,
    rabbitmq: RabbitMQ,
    sftp_server: SshServer,
    postgres_url: str,
) -> Iterator[tuple[DemoWorld, str]]:
    from kcbus.airflow.settings import load_config

    keys = demo_keys.copy_to(tmp_path / "keys")
    namespace = unique()
    folder = sftp_server.root / namespace
    folder.mkdir()
    sftp_server.chown_to_user(folder)
    config_dir = make_config(
        tmp_path / "config", keys=keys, ledger=postgres_url,
        endpoints=real_endpoints(sftp_server, tmp_path / "claims", namespace),
    )
    monkeypatch.setenv("KCBUS_CONFIG", str(config_dir))
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("KCBUS_KEYSTORE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("KCBUS_LEDGER_KEYS", str(tmp_path / "ledger.keys"))
    config = load_config(config_dir)
    # Each partner publishes as its own RabbitMQ user: the broker validates the user-id
    # property, which the adapter reports as the delivery's peer and the bus checks against
    # the signing partner. The bus itself uses the broker's admin login.
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", rabbitmq.url)
    connections = {CONN: rabbitmq.url}
    for partner, p in config.partners.items():
        if not (p.receive_from or "").startswith("conn://"):
            continue
        password = f"pw-{partner}"
        _ensure_rabbit_user(rabbitmq, partner, password)
        conn_id = inbound_conn(partner)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", rabbitmq.url)
        connections[conn_id] = rabbitmq.url.replace("guest:guest@", f"{partner}:{password}@")
    world = DemoWorld(config, keys / "partners", PASSPHRASE, connections=connections)
    world.prepare_keys(T0 - timedelta(days=1))
    try:
        yield world, postgres_url
    finally:
        world.close()


def _ensure_rabbit_user(rabbitmq: RabbitMQ, user: str, password: str) -> None:
    if user not in rabbitmq.ctl("list_users", "--quiet"):
        rabbitmq.ctl("add_user", user, password)
    rabbitmq.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize(
    ("flow", "inline_seconds"),
    [("entlassbrief", 5.0), ("bauantrag", 0.0), ("tarifdaten", 0.0), ("kommunen", 5.0)],
)
def test_flow_runs_under_dag_test_against_real_servers(
    flow: str, inline_seconds: float, real_env: tuple[DemoWorld, str], tmp_path: Path
) -> None:
    from kcbus.airflow import tasks
    from kcbus.airflow.factory import flow_dags
    from kcbus.ledger import Ledger

    world, ledger_url = real_env
    clock = Clock(datetime.now(tz=T0.tzinfo) - timedelta(minutes=1))
    expectations = send_demo_traffic(
        world, now=clock, scratch=tmp_path / "scratch", large_mb=20, letters=2,
        tariff_zones=2000, flows=(flow,),
    )
    try:
        run = flow_dags()[f"kcbus_{flow}"].test(run_conf={"inline_seconds": inline_seconds})
        assert str(run.state) == "success"
        with Ledger(ledger_url) as ledger:
            assert ledger.dialect == "postgresql"
            assert check(ledger, expectations) == []
            (summary,) = [s for s in summarize(ledger) if s.flow == flow]
            assert summary.settled
            assert summary.received == len(expectations)
        expect_arrivals(expectations, collect_all(world, tmp_path / "scratch"))
    finally:
        for cached in tasks._BUSES.values():  # connections to servers this test started
            cached.close()
        tasks._BUSES.clear()
