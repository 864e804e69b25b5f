"""Airflow Connection → typed adapter settings → a working kcbus transport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk import Connection

from kcbus.airflow.hook import ConnectionConfigError, KcbusTransportHook, TransportSettings


def _conn(**fields: object) -> Connection:
    extra = fields.pop("extra", None)
    return Connection(
        conn_id=str(fields.pop("conn_id", "partner")),
        conn_type=str(fields.pop("conn_type", "kcbus")),
        extra=json.dumps(extra) if extra is not None else None,
        **fields,  # type: ignore[arg-type]
    )


def test_amqp_connection_becomes_url_with_vhost_and_options() -> None:
    settings = TransportSettings.from_connection(
        _conn(
            host="broker.example.org", port=5671, login="kcbus", password="s3cr:t/",
            schema="/", extra={"transport": "amqp", "prefetch": 50, "confirm": True},
        )
    )
    assert settings.scheme == "amqp"
    assert settings.url == "amqp://kcbus:s3cr%3At%2F@broker.example.org:5671/%2F"
    assert settings.redacted_url == "amqp://kcbus:***@broker.example.org:5671/%2F"
    assert dict(settings.options) == {"prefetch": 50, "confirm": True}
    assert "s3cr" not in repr(settings)


def test_conn_type_may_name_the_transport_directly() -> None:
    settings = TransportSettings.from_connection(
        _conn(conn_type="sftp", host="sftp.gemeinde-a.de", port=22, login="kcbus",
              schema="outbox/kcbus", extra={"known_hosts": "/etc/kcbus/known_hosts"})
    )
    assert settings.url == "sftp://kcbus@sftp.gemeinde-a.de:22/outbox/kcbus"
    assert dict(settings.options) == {"known_hosts": "/etc/kcbus/known_hosts"}


def test_full_url_in_extra_gets_login_and_password_added() -> None:
    settings = TransportSettings.from_connection(
        _conn(login="lra", password="pw", extra={"url": "https://inbox.lra.de:8443/kcbus"})
    )
    assert settings.scheme == "https"
    assert settings.url == "https://lra:pw@inbox.lra.de:8443/kcbus"
    assert settings.redacted_url == "https://lra:***@inbox.lra.de:8443/kcbus"


def test_file_drop_path() -> None:
    settings = TransportSettings.from_connection(
        _conn(conn_type="file", schema="/srv/kcbus/drop/klinikum")
    )
    assert settings.url == "file:///srv/kcbus/drop/klinikum"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"extra": {}}, "extra.transport or extra.url is required"),
        ({"extra": {"url": "https://u:pw@h/x"}}, "must not contain a password"),
        ({"extra": {"transport": "amqp", "queues": ["a", "b"]}}, "extra.queues must be"),
        ({"extra": {"url": "no-scheme"}}, "extra.transport or extra.url is required"),
    ],
)
def test_unusable_connections_are_configuration_errors_naming_the_connection(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConnectionConfigError) as raised:
        TransportSettings.from_connection(_conn(conn_id="klinikum_out", **fields))
    assert raised.value.conn_id == "klinikum_out"
    assert problem in str(raised.value)
    assert "pw" not in str(raised.value)


def test_hook_reads_the_connection_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KCBUS_TEST_DROP",
        json.dumps({"conn_type": "kcbus", "extra": {"url": "memory://kcbus-test-drop"}}),
    )
    hook = KcbusTransportHook("kcbus_test_drop")
    assert hook.settings.url == "memory://kcbus-test-drop"
    assert hook.settings is hook.settings  # parsed once


def test_inbound_endpoints_take_the_bus_limit_unless_they_set_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.transport import Outbound
    from kcbus.airflow.hook import open_endpoint

    url = f"file://{tmp_path}"
    monkeypatch.setenv("AIRFLOW_CONN_DROP", json.dumps(
        {"conn_type": "kcbus", "extra": {"url": url}}))

    def too_large(endpoint: str) -> bool:
        with open_endpoint(endpoint, max_bytes=4096) as drop:
            drop.send(Outbound("env-1", "bus", data=b"x" * 5000))
            [delivery] = drop.receive(1)
            drop.release(delivery)
            return delivery.too_large

    assert too_large(url)
    assert too_large("conn://drop")
    assert not too_large(url + "?max_bytes=10000")
    assert not too_large("conn://drop?max_bytes=10000")
