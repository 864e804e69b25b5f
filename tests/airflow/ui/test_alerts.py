"""Dead-letter alerts: a real SMTP server on localhost receives what Airflow's email settings
send; the mail lists the run's DEAD messages by ID and reason, and nothing of their content."""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from kcbus.airflow.ui import UiSettings
from kcbus.airflow.ui.alerts import DeadLetterNotifier
from kcbus.ledger import Ledger, Status
from tests.airflow.ui._ledger_data import write_message
from tests.servers._process import free_port

pytestmark = pytest.mark.real


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Inbox]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    # Airflow's own SMTP settings ([smtp] section, read from the environment on every get).
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_PORT", str(port))
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_STARTTLS", "False")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_SSL", "False")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_MAIL_FROM", "kcbus@musterkreis.example")
    monkeypatch.setenv("AIRFLOW__SMTP__SMTP_RETRY_LIMIT", "0")
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", f"smtp://127.0.0.1:{port}")
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass(frozen=True)
class _Run:
    """The two facts the notifier reads from the callback context's ``dag_run``."""

    start_date: datetime
    end_date: datetime | None


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[Ledger, str]]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as led:
        yield led, url


def test_dead_messages_of_the_run_are_mailed_with_ids_and_reasons_only(
    smtp_server: _Inbox, ledger: tuple[Ledger, str]
) -> None:
    led, url = ledger
    start = datetime.now(UTC) - timedelta(minutes=10)
    secret = b"<antrag><antragsteller>Erika Mustermann</antragsteller></antrag>"
    in_run = [
        write_message(led, route="bauantrag", sender="gemeinde-musterdorf",
                      recipients=["lra-musterkreis"], final=Status.DEAD, content=secret,
                      received_at=start + timedelta(minutes=m),
                      reason="connection refused by sftp://lra.example")
        for m in (1, 2)
    ]
    before = write_message(led, route="bauantrag", sender="gemeinde-musterdorf",
                           recipients=["lra-musterkreis"], final=Status.DEAD,
                           received_at=start - timedelta(hours=2))
    other_flow = write_message(led, route="kommunen", sender="gemeinde-musterdorf",
                               recipients=["lra-musterkreis"], final=Status.DEAD,
                               received_at=start + timedelta(minutes=3))
    resolved = write_message(led, route="bauantrag", sender="gemeinde-musterdorf",
                             recipients=["lra-musterkreis"], final=Status.DEAD,
                             received_at=start + timedelta(minutes=4))
    led.mark_resolved([resolved.uuid], actor="op", reason="sent on paper", now=datetime.now(UTC))

    notifier = DeadLetterNotifier(
        flow="bauantrag", to=["bereitschaft@musterkreis.example"],
        settings=UiSettings(config=None, ledger_url=url),
        page_url="http://airflow.example/kcbus/ui/?flow=bauantrag&status=DEAD",
    )
    notifier({"dag_run": _Run(start_date=start, end_date=None)})

    assert len(smtp_server.mails) == 1
    recipients, mail = smtp_server.mails[0]
    assert recipients == ["bereitschaft@musterkreis.example"]
    assert mail["Subject"] == "[kcbus] 2 dead message(s) in flow bauantrag"
    body = "".join(
        part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for part in mail.walk()
        if part.get_content_type() == "text/html"
    )
    for written in in_run:
        assert written.uuid in body
    assert "connection refused by sftp://lra.example" in body
    for excluded in (before, other_flow, resolved):
        assert excluded.uuid not in body
    assert "Mustermann" not in body
    assert "http://airflow.example/kcbus/ui/?flow=bauantrag&amp;status=DEAD" in body


def test_no_dead_message_no_mail(smtp_server: _Inbox, ledger: tuple[Ledger, str]) -> None:
    led, url = ledger
    start = datetime.now(UTC) - timedelta(minutes=5)
    write_message(led, route="bauantrag", sender="a", recipients=["b"], final=Status.DELIVERED,
                  received_at=start + timedelta(minutes=1))
    notifier = DeadLetterNotifier(flow="bauantrag", to="bereitschaft@musterkreis.example",
                                  settings=UiSettings(config=None, ledger_url=url))
    notifier({"dag_run": _Run(start_date=start, end_date=datetime.now(UTC))})
    assert smtp_server.mails == []
