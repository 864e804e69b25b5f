"""From the route config to flow plans: what each flow watches, polls and how often."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from kcbus.airflow.flows import POLL_EVERY, event_source, flow_plans, kombu_source
from kcbus.airflow.settings import UnsetVariable, expanded_config, load_config
from tests.airflow.airflow_home import PROJECT_ROOT


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KCBUS_HOME", str(PROJECT_ROOT))
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    return PROJECT_ROOT / "config"


def test_demo_flows_watch_their_senders_drop_folders(demo: Path, tmp_path: Path) -> None:
    plans = {p.name: p for p in flow_plans(load_config(demo))}
    assert list(plans) == ["entlassbrief", "bauantrag", "tarifdaten", "kommunen"]
    drop = tmp_path / "var" / "drop"
    entlass = plans["entlassbrief"]
    assert [e.folder for e in entlass.events] == [str(drop / "von-klinikum-musterkreis")]
    assert entlass.cron is None and entlass.end_to_end
    # Municipalities and the district office send on two flows: both watch their folders.
    assert {e.folder for e in plans["bauantrag"].events} == {
        e.folder for e in plans["kommunen"].events
    } == {str(drop / f"von-{p}") for p in
          ("lra-musterkreis", "gemeinde-musterdorf", "stadt-beispielstadt")}
    tarif = plans["tarifdaten"]
    assert tarif.cron == "0 5 * * *"
    assert tarif.destinations == ("tarif-vab", "ticketing-feed")
    assert plans["bauantrag"].sweep == timedelta(minutes=2)  # retry backoff 30 s, min 2 min


@pytest.mark.parametrize(
    ("url", "watch"),
    [
        ("file:///srv/drop/von-x", ("folder", "/srv/drop/von-x")),
        ("amqp://rabbit.lra.de:5672/%2F?inbox=bus-x", ("queue", "kcbus.bus-x")),
        ("conn://kcbus_broker?inbox=bus-x&exchange=lra", ("queue", "lra.bus-x")),
        ("kombu+filesystem:///var/broker?inbox=bus-x", ("queue", "kcbus.bus-x")),
        ("amqp://kcbus:secret@rabbit/%2F?inbox=bus-x", None),  # a password: polled instead
        ("amqps://TOKEN@rabbit/%2F?inbox=bus-x", None),  # a token as user name: polled too
        ("amqp://rabbit/%2F", None),  # no inbox: nothing to consume
        ("sftp://kcbus@sftp.partner.de/outbox", None),
        ("memory://twin?inbox=bus-x", None),
    ],
)
def test_which_endpoints_are_watched(url: str, watch: tuple[str, str] | None) -> None:
    source = event_source(url)
    if watch is None:
        assert source is None
        return
    assert source is not None
    kind, where = watch
    assert (source.folder if kind == "folder" else source.queue) == where
    assert "secret" not in source.key


def test_kombu_folder_broker_maps_to_its_queue_folder() -> None:
    source = kombu_source("kombu+filesystem:///var/broker?inbox=bus-x")
    assert source is not None
    assert dict(source.transport_options)["data_folder_in"] == "/var/broker/queue"


def test_polled_endpoints_get_the_short_schedule(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for source in demo.glob("*.yaml"):
        text = source.read_text().replace(
            "file://${KCBUS_VAR}/drop/von-klinikum-musterkreis",
            "sftp://kcbus@sftp.klinikum.de/outbox?known_hosts=/etc/kcbus/known_hosts",
        )
        (config / source.name).write_text(text)
    (plan,) = [p for p in flow_plans(load_config(config)) if p.name == "entlassbrief"]
    assert plan.events == ()
    assert plan.polled == ("sftp://kcbus@sftp.klinikum.de/outbox?known_hosts=/etc/kcbus/known_hosts",)
    assert timedelta(minutes=1) >= POLL_EVERY


def test_unset_variables_are_named_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KCBUS_NOPE", raising=False)
    config = tmp_path / "bus.yaml"
    config.write_text("bus:\n  id: kcbus\n  keystore: ${KCBUS_NOPE}/keys\n")
    with pytest.raises(UnsetVariable) as raised:
        expanded_config(config)
    assert raised.value.line == 3
    assert raised.value.name == "KCBUS_NOPE"
    assert str(config) in str(raised.value)


def test_expansion_is_written_once_per_content(demo: Path) -> None:
    first = expanded_config(demo)
    assert first != demo
    assert expanded_config(demo) == first
    assert "${" not in (first / "partners.yaml").read_text()


def test_expanded_copies_are_private_to_their_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ${VAR}s may be credentials (a broker password): the expanded copy must not be world-readable.
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("KCBUS_BROKER_PASSWORD", "s3cret")
    config = tmp_path / "bus.yaml"
    config.write_text("bus:\n  id: kcbus\n  broker: amqp://bus:${KCBUS_BROKER_PASSWORD}@h/\n")
    copy = expanded_config(config)
    assert copy != config
    assert "s3cret" in copy.read_text()
    for path in (copy, copy.parent):
        assert (path.stat().st_mode & 0o077) == 0, path
