"""The keystore passphrase of Airflow workers: environment, secrets file, Airflow Connection,
Airflow Variable — in that order, and only when a private key is needed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from adapters.envelope import Keystore, KeystoreError
from kcbus.airflow import secrets, tasks
from kcbus.airflow.secrets import keystore_passphrase

PASSPHRASE = "worker passphrase"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "KCBUS_KEYSTORE_PASSPHRASE",
        "KCBUS_KEYSTORE_PASSPHRASE_FILE",
        "AIRFLOW_CONN_KCBUS_KEYSTORE",
        "AIRFLOW_VAR_KCBUS_KEYSTORE_PASSPHRASE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _connection(monkeypatch: pytest.MonkeyPatch, password: str | None) -> None:
    fields: dict[str, object] = {"conn_type": "generic"}
    if password is not None:
        fields["password"] = password
    monkeypatch.setenv("AIRFLOW_CONN_KCBUS_KEYSTORE", json.dumps(fields))


def test_order_of_sources(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lookup = keystore_passphrase()
    clean.setenv("AIRFLOW_VAR_KCBUS_KEYSTORE_PASSPHRASE", "from variable")
    assert lookup() == "from variable"
    _connection(clean, "from connection")
    assert lookup() == "from connection"
    file = tmp_path / "passphrase"
    file.write_text("from file\n")
    os.chmod(file, 0o600)
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(file))
    assert lookup() == "from file"
    clean.delenv("KCBUS_KEYSTORE_PASSPHRASE_FILE")
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE", "from env")
    assert lookup() == "from env"


def test_environment_first_asks_airflow_nothing(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE", "from env")

    def unreachable(*_: object) -> None:
        raise AssertionError("Airflow asked although the environment has the passphrase")

    clean.setattr(secrets, "_from_airflow", unreachable)
    assert keystore_passphrase()() == "from env"


def test_missing_or_broken_sources_are_named(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="kcbus_keystore_passphrase") as missing:
        keystore_passphrase()()
    assert "KCBUS_KEYSTORE_PASSPHRASE_FILE" in str(missing.value)
    _connection(clean, None)
    with pytest.raises(KeystoreError, match="has no password"):
        keystore_passphrase()()
    clean.delenv("AIRFLOW_CONN_KCBUS_KEYSTORE")
    file = tmp_path / "passphrase"
    file.write_text(PASSPHRASE)
    os.chmod(file, 0o644)
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(file))
    with pytest.raises(KeystoreError, match="readable by group or others"):
        keystore_passphrase()()


def test_asked_only_when_a_private_key_is_needed(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Keystore(tmp_path / "ks", PASSPHRASE).create_identity("bus", "modern", now=NOW)
    asked: list[str] = []
    lookup = keystore_passphrase(conn_id="kcbus_keystore_test")

    def counted() -> str:
        asked.append("x")
        return lookup()

    store = Keystore(tmp_path / "ks", counted)
    assert store.export_public("bus") and store.keys() and asked == []
    _connection(clean, "wrong")  # another conn_id: not consulted
    clean.setenv(
        "AIRFLOW_CONN_KCBUS_KEYSTORE_TEST",
        json.dumps({"conn_type": "generic", "password": PASSPHRASE}),
    )
    store.signer("bus", NOW)
    store.signer("bus", NOW)
    assert asked == ["x"]


def test_the_task_bus_gets_the_lazy_source(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kcbus import bus as bus_module
    from kcbus.airflow import settings

    class Config:
        partners: ClassVar[dict[str, object]] = {}

    seen: dict[str, object] = {}

    def fake_open(config: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return object()

    clean.setattr(settings, "load_config", lambda path: Config())
    clean.setattr(bus_module.Bus, "open", fake_open)
    clean.setattr(tasks, "_BUSES", {})
    tasks.bus("airflow:test", tmp_path / "kcbus.yaml")
    source = seen["passphrase"]
    assert callable(source) and not isinstance(source, str)
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE", "from env")
    assert source() == "from env"


def test_every_source_is_masked_in_task_logs(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import airflow.sdk.log

    told: list[object] = []
    real = airflow.sdk.log.mask_secret

    def recorded(secret: str, name: str | None = None) -> None:
        told.append(secret)
        real(secret, name)

    clean.setattr(airflow.sdk.log, "mask_secret", recorded)
    lookup = keystore_passphrase()
    sources = {
        "variable": "passphrase from the variable 7f3a",
        "connection": "passphrase from the connection 7f3a",
        "file": "passphrase from the file 7f3a",
        "env": "passphrase from the environment 7f3a",
    }
    clean.setenv("AIRFLOW_VAR_KCBUS_KEYSTORE_PASSPHRASE", sources["variable"])
    assert lookup() == sources["variable"]
    _connection(clean, sources["connection"])
    assert lookup() == sources["connection"]
    file = tmp_path / "passphrase"
    file.write_text(sources["file"] + "\n")
    os.chmod(file, 0o600)
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE_FILE", str(file))
    assert lookup() == sources["file"]
    clean.delenv("KCBUS_KEYSTORE_PASSPHRASE_FILE")
    clean.setenv("KCBUS_KEYSTORE_PASSPHRASE", sources["env"])
    assert lookup() == sources["env"]
    assert set(told) == set(sources.values())
