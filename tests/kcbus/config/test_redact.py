"""Endpoint URLs may carry credentials: config errors and reprs name file, line and field and
never show a password or a secret query value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kcbus._errors import ConfigError
from kcbus.config import load, redact_url, redact_urls, url_has_secret
from tests.kcbus.config.test_load import VALID, write

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"sftp://kcbus:{SECRET}@sftp.gemeinde-a.de/in", "sftp://kcbus:***@sftp.gemeinde-a.de/in"),
        (f"amqp://bus:{SECRET}@broker:5672//?inbox=a", "amqp://bus:***@broker:5672//?inbox=a"),
        (
            f"https://inbox.example/in?inbox=a&token={SECRET}&Client_Secret={SECRET}#top",
            "https://inbox.example/in?inbox=a&token=***&Client_Secret=***#top",
        ),
        # an unencoded "/" or "?" in a password ends the authority early for a URL parser
        (f"sftp://kcbus:ab/{SECRET}@host/in", "sftp://kcbus:***@host/in"),
        (f"sftp://kcbus:ab?{SECRET}@host/in", "sftp://kcbus:***@host/in"),
        (f"sftp://kcbus:a@{SECRET}@host/in", "sftp://kcbus:***@host/in"),
    ],
)
def test_passwords_and_secret_parameters_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert url_has_secret(url)
    assert SECRET not in redact_urls(f"cannot reach '{url}', giving up")


@pytest.mark.parametrize(
    "url",
    [
        "memory://kcbus-inbox",
        "sftp://kcbus-sftp@127.0.0.1:2222/data/in",
        "amqp://[::1]:5672//?inbox=a",
        "https://host:443/files/a@b?inbox=x",
        "file:///var/drop/a@b",
    ],
)
def test_urls_without_secrets_stay_as_written(url: str) -> None:
    assert redact_url(url) == url
    assert not url_has_secret(url)


@pytest.mark.parametrize(
    ("change", "line", "field"),
    [
        # the scheme forgotten: nothing tells which part is the password, so nothing is echoed
        (
            ("deliver_to: memory://lra", f"deliver_to: lra:{SECRET}@sftp.lra.de/in"),
            17,
            "partners.lra.deliver_to",
        ),
        # a URL pasted into the wrong field
        (
            ("profile: fitconnect", f"profile: sftp://lra:{SECRET}@sftp.lra.de/in"),
            16,
            "partners.lra.profile",
        ),
        (
            ("backoff: 10s", f"backoff: amqp://bus:{SECRET}@broker//"),
            26,
            "routes.bauantrag.retry.backoff",
        ),
        (
            ("inspection: end-to-end", f"inspection: https://h/in?token={SECRET}"),
            24,
            "routes.bauantrag.inspection",
        ),
    ],
)
def test_config_errors_name_file_line_and_field_but_not_the_secret(
    tmp_path: Path, change: tuple[str, str], line: int, field: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load(path)
    err = caught.value
    assert (err.file, err.line, err.field) == (str(path), line, field)
    assert SECRET not in str(err) and SECRET not in repr(err)
    assert SECRET not in err.problem


def test_loaded_endpoints_keep_their_credentials_but_never_show_them(tmp_path: Path) -> None:
    text = VALID.replace(
        "deliver_to: memory://lra", f"deliver_to: sftp://lra:{SECRET}@sftp.lra.de/in"
    ).replace(
        "  inbound: memory://kcbus-inbox",
        textwrap.indent(
            f"ledger: postgresql://kcbus:{SECRET}@db/ledger\n"
            f"inbound: amqp://bus:{SECRET}@broker//?inbox=bus",
            "  ",
        ),
    )
    config = load(write(tmp_path, text))
    lra = config.partners["lra"]
    assert lra.deliver_to == f"sftp://lra:{SECRET}@sftp.lra.de/in"  # the adapter needs it
    assert config.bus.ledger == f"postgresql://kcbus:{SECRET}@db/ledger"
    # ...but what lands in a log line or a traceback does not show it
    for shown in (repr(lra), str(lra), repr(config.bus), repr(config)):
        assert SECRET not in shown
    assert "sftp://lra:***@sftp.lra.de/in" in repr(lra)
