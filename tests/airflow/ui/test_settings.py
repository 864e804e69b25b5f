"""Where the operator view finds the ledger and the flows, and which content it may show."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcbus.airflow.ui import UiSettings
from kcbus.airflow.ui._ledger_store import LedgerStore
from kcbus.airflow.ui._settings import parse_content_flows

PROJECT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("value", "flows"),
    [("", set()), ("False", set()), ("off", set()), ("*", {"*"}), ("True", {"*"}),
     ("bauantrag", {"bauantrag"}), (" bauantrag , kommunen ", {"bauantrag", "kommunen"})],
)
def test_content_is_off_unless_named(value: str, flows: set[str]) -> None:
    assert parse_content_flows(value) == flows


def test_content_rules_per_flow() -> None:
    some = UiSettings(config=None, content_flows=frozenset({"kommunen"}))
    assert some.shows_content("kommunen") and not some.shows_content("bauantrag")
    assert not some.shows_content(None)
    every = UiSettings(config=None, content_flows=frozenset({"*"}))
    assert every.shows_content("bauantrag")
    assert not UiSettings(config=None).shows_content("kommunen")


def test_flows_come_from_the_route_config_the_dags_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo config uses ${KCBUS_VAR}: read the way the DAG factory reads it.
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    settings = UiSettings(config=PROJECT / "config",
                          ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    store = LedgerStore.from_settings(settings)
    try:
        assert store.flows() == ["entlassbrief", "bauantrag", "tarifdaten", "kommunen"]
    finally:
        store.close()
