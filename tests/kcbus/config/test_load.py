"""Config loading: a valid file gives typed partners and routes; every mistake names file,
line and field."""

from __future__ import annotations

import random
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from kcbus._errors import ConfigError
from kcbus.config import READER, RetryPolicy, load

VALID = """\
bus:
  id: kcbus
  name: kcbus Musterkreis
  address: {verzeichnisdienst: DVDV, kennung: "kcbus:musterkreis"}
  keystore: keys
  inbound: memory://kcbus-inbox
partners:
  gemeinde-a:
    name: Gemeinde A
    address: {verzeichnisdienst: DVDV, kennung: "gemeinde-a"}
    deliver_to: memory://gemeinde-a
    may_send: [baugenehmigung.*]
  lra:
    name: Landratsamt
    address: {verzeichnisdienst: DVDV, kennung: "lra"}
    profile: fitconnect
    deliver_to: memory://lra
    production: false
    receipts: []
routes:
  bauantrag:
    match: {message_types: [baugenehmigung.*], standards: [XBau]}
    to: [leser, lra]
    inspection: end-to-end
    schemas: [schemas]
    retry: {attempts: 3, backoff: 10s, max_backoff: 2m, jitter: 0}
    retention: 90d
"""


def write(tmp_path: Path, text: str, name: str = "kcbus.yaml") -> Path:
    (tmp_path / "schemas").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_config_loads_typed(tmp_path: Path) -> None:
    config = load(write(tmp_path, VALID))
    assert config.bus.keystore == tmp_path / "keys"
    assert config.bus.inbound == ("memory://kcbus-inbox",)
    a = config.partners["gemeinde-a"]
    assert a.profile == "modern" and a.production and a.may_send_type("baugenehmigung.antrag.0200")
    assert not a.may_send_type("beteiligung.anfrage.0300")
    assert config.partners["lra"].receipts == frozenset()
    route = config.routes["bauantrag"]
    assert route.to == (READER, "lra") and route.end_to_end
    assert route.schemas == (tmp_path / "schemas",)
    assert route.retention == timedelta(days=90)
    assert route.retry == RetryPolicy(
        attempts=3, backoff=timedelta(seconds=10), max_backoff=timedelta(minutes=2), jitter=0.0
    )
    assert config.partner_by_address("DVDV", "lra") is config.partners["lra"]
    assert config.partner_by_address("OTHER", "lra") is None
    found = config.route_for(
        message_type="baugenehmigung.antrag.0200", standard="XBau", sender="gemeinde-a"
    )
    assert found is route
    assert config.route_for(message_type="x.y.1", standard="XBau", sender="gemeinde-a") is None


def test_folder_of_files_merges(tmp_path: Path) -> None:
    head, _, tail = VALID.partition("routes:\n")
    write(tmp_path, head, "a.yaml")
    write(tmp_path, "routes:\n" + tail, "b.yaml")
    config = load(tmp_path)
    assert list(config.routes) == ["bauantrag"]


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        (("profile: fitconnect", "profile: rsa"), 16, "partners.lra.profile", "must be one of"),
        (("to: [leser, lra]", "to: [leser, lrx]"), 23, "routes.bauantrag.to", "did you mean 'lra'"),
        (("attempts: 3", "attempts: many"), 26, "routes.bauantrag.retry.attempts", "whole number"),
        (("retention: 90d", "retention: soon"), 27, "routes.bauantrag.retention", "duration"),
        (("schemas: [schemas]", "schemas: [nowhere]"), 25, "routes.bauantrag.schemas[0]", "exist"),
        (
            ("    production: false", "    produktion: false"),
            18,
            "partners.lra.produktion",
            "unknown field",
        ),
        (('kennung: "lra"', 'kennung: "gemeinde-a"'), 15, "partners.lra.address", "already used"),
        (("    receipts: []\n", ""), 14, "partners.lra", "needs deliver_to"),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, change: tuple[str, str], line: int, field: str, words: str
) -> None:
    text = VALID.replace(*change)
    if field == "partners.lra":  # sends but has no deliver_to
        text = text.replace("    deliver_to: memory://lra\n", "    may_send: [x.*]\n")
        text = text.replace("to: [leser, lra]", "to: [leser]")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    err = caught.value
    assert (err.file, err.line, err.field) == (str(path), line, field)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: {field}: ")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("  lra:\n", "  gemeinde-a:\n"))
    with pytest.raises(ConfigError, match="duplicate key") as caught:
        load(path)
    assert caught.value.line == 13


def test_broken_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("name: Gemeinde A", "name: [Gemeinde A"))
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load(path)
    assert caught.value.line is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config"):
        load(tmp_path / "nope.yaml")


def test_backoff_grows_caps_and_jitters() -> None:
    policy = RetryPolicy(
        attempts=5, backoff=timedelta(seconds=10), max_backoff=timedelta(seconds=60), jitter=0.5
    )
    rng = random.Random(7)
    delays = [policy.delay(n, rng).total_seconds() for n in range(1, 6)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    assert all(30 <= d <= 60 for d in delays[3:])
    spread = {round(policy.delay(1, rng).total_seconds(), 3) for _ in range(20)}
    assert len(spread) > 10  # jitter: workers failing together do not retry together
    assert not policy.exhausted(4) and policy.exhausted(5)


def test_max_inbound_bytes_defaults_to_the_transport_limit_and_is_validated(
    tmp_path: Path,
) -> None:
    from adapters.transport import DEFAULT_MAX_BYTES

    assert load(write(tmp_path, VALID)).bus.max_inbound_bytes == DEFAULT_MAX_BYTES
    limited = VALID.replace("  inbound: memory://kcbus-inbox\n",
                            "  inbound: memory://kcbus-inbox\n  max_inbound_bytes: 500_000_000\n")
    assert load(write(tmp_path, limited)).bus.max_inbound_bytes == 500_000_000
    for bad, words in (("0", "at least 1"), ("2GiB", "whole number")):
        path = write(tmp_path, VALID.replace(
            "  inbound: memory://kcbus-inbox\n",
            f"  inbound: memory://kcbus-inbox\n  max_inbound_bytes: {bad}\n"))
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert (caught.value.line, caught.value.field) == (7, "bus.max_inbound_bytes")
        assert words in str(caught.value)
