"""Error answers of the operator API: a stable code and a text without server paths or URL
credentials; the detail goes to the API server's log (redacted).

The app is driven in-process (the login check replaced by a stub operator): what is tested is
how errors raised by the ledger side become answers, not Airflow's auth (``test_api`` does
that against a real API server)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
from fastapi.testclient import TestClient

from kcbus._errors import ConfigError, LedgerError, LedgerUnavailable, NotFound
from kcbus.airflow.ui import UiSettings, create_app
from kcbus.airflow.ui._api import _operator
from kcbus.airflow.ui._store import MessageStore
from xoev import PartnerFault

API = "/api/v1"
SECRET = "s3cr3t-Pa55"
SERVER_PATH = "/srv/kcbus/etc/routes.yaml"


class _Operator:
    name = "op"

    def can_edit(self, flows: object = None) -> bool:
        return True

    def require_edit(self, flows: object = None) -> None:
        return None


class _RefusingStore:
    """A store whose every call raises ``error`` (the ledger side failing)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., object]:
        def fail(*args: object, **kwargs: object) -> object:
            raise self.error

        return fail


@contextmanager
def _client(store: Callable[[], object]) -> Iterator[TestClient]:
    app = create_app(UiSettings(config=None), cast("Callable[[], MessageStore]", store))
    app.dependency_overrides[_operator] = _Operator
    with TestClient(app) as client:
        yield client


def _unconfigured() -> object:
    # What LedgerStore.from_settings raises for a broken route config on the server.
    raise ConfigError(Path(SERVER_PATH), 12, "bus.ledger", "must be a URL like memory://name")


def test_an_unconfigured_ledger_answers_503_with_a_code_and_no_server_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "kcbus.airflow.ui._api"), _client(_unconfigured) as c:
        response = c.get(f"{API}/failures")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not-configured"
    assert SERVER_PATH not in response.text and "/srv" not in response.text
    # The operator on call finds the detail in the server's log.
    assert SERVER_PATH in caplog.text and "ConfigError" in caplog.text


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (LedgerError(f"ledger key file {SERVER_PATH}.keys is unreadable"), 503, "not-configured"),
        (
            LedgerUnavailable(f"cannot reach postgresql://kcbus:{SECRET}@db.internal/ledger"),
            503,
            "unavailable",
        ),
        (
            PartnerFault(f"delivery to sftp://lra:{SECRET}@sftp.lra.de{SERVER_PATH} refused"),
            409,
            "partner",
        ),
    ],
)
def test_ledger_errors_answer_a_stable_code_and_a_generic_text(
    error: Exception, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "kcbus.airflow.ui._api"),
        _client(lambda: _RefusingStore(error)) as c,
    ):
        read = c.get(f"{API}/failures")
        action = c.post(f"{API}/messages/%23{7}/resend", json={"reason": "partner is back"})
    for response in (read, action):
        assert response.status_code == status
        assert response.json()["code"] == code
        assert SERVER_PATH not in response.text and SECRET not in response.text
    # Logged for the operator, but URL credentials never reach the log either.
    assert SECRET not in caplog.text
    assert type(error).__name__ in caplog.text


def test_an_unknown_message_is_a_404_naming_only_its_reference() -> None:
    with _client(lambda: _RefusingStore(NotFound("#42"))) as c:
        response = c.get(f"{API}/messages/%2342")
    assert response.status_code == 404
    assert response.json() == {"detail": "no message #42 in the ledger", "code": "not-found"}


def test_refusals_of_the_api_itself_carry_a_code_too() -> None:
    with _client(lambda: _RefusingStore(NotFound("#1"))) as c:
        response = c.get(f"{API}/messages", params={"status": "LOST"})
    assert response.status_code == 422
    assert response.json()["code"] == "bad-request"
    assert "unknown status 'LOST'" in response.json()["detail"]
