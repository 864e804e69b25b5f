"""The operator's commands against a ledger the bus has filled: list, show (history, never the
content of an end-to-end message), resend and resolve (recorded with who and why), prune,
rotate-key; errors are one line with the documented exit codes."""

from __future__ import annotations

import json

import pytest

from kcbus.cli import main
from kcbus.ledger import Kind, MessageFilter, Status
from tests.kcbus.world import World, entlassbrief, xbau_antrag


@pytest.fixture
def filled(world: World) -> World:
    world.send("gemeinde-a", xbau_antrag())
    world.send("gemeinde-a", xbau_antrag(drop="xbau:referenzAntragsservice"))
    world.send("klinikum", entlassbrief(), end_to_end_for="praxis")
    world.bus.drain()
    return world


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_filters_and_json(filled: World, capsys: pytest.CaptureFixture[str]) -> None:
    url = filled.bus.ledger.url
    code, out, _ = _run(capsys, "ledger", "list", "--ledger", url)
    assert code == 0 and out.count("\n") == 4  # header + 3 messages (receipts hidden)
    code, out, _ = _run(capsys, "ledger", "list", "--ledger", url, "--status", "rejected",
                        "--json")
    (row,) = json.loads(out)
    assert (row["status"], row["reason_code"], row["sender"]) == (
        "REJECTED", "schema-invalid", "gemeinde-a"
    )
    code, out, _ = _run(capsys, "ledger", "list", "--ledger", url, "--partner", "praxis",
                        "--since", "1h", "--json")
    assert code == 0 and json.loads(out) == []  # the world's clock is in 2026-03; "now" is not
    code, out, _ = _run(capsys, "ledger", "list", "--ledger", url, "--partner", "praxis",
                        "--since", "2026-03-01T00:00:00", "--json")
    assert [r["route"] for r in json.loads(out)] == ["entlassbrief"]


def test_show_gives_history_never_content(filled: World,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = filled.bus.ledger.url
    (e2e,) = filled.bus.ledger.search(MessageFilter(route="entlassbrief", kind=Kind.MESSAGE))
    code, out, _ = _run(capsys, "ledger", "show", e2e.ref, "--ledger", url)
    assert code == 0
    for stage in ("receive", "open", "validate", "route", "seal", "deliver", "acknowledge"):
        assert f" {stage} " in out
    assert "sealed end-to-end" in out
    assert "Entlassbrief" not in out and "999999900" not in out  # no content, no names
    code, out, _ = _run(capsys, "ledger", "show", e2e.ref, "--ledger", url, "--json")
    shown = json.loads(out)
    assert shown["content_available"] is False and shown["message"]["status"] == "ACKNOWLEDGED"
    assert len(shown["receipts"]) == 2


def test_resend_and_resolve_record_who_and_why(filled: World,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = filled.bus.ledger.url
    (done,) = filled.bus.ledger.search(MessageFilter(status=(Status.ACKNOWLEDGED,),
                                                     route="bauantrag", kind=Kind.MESSAGE))
    (rejected,) = filled.bus.ledger.search(MessageFilter(status=(Status.REJECTED,)))
    code, out, err = _run(capsys, "resend", done.ref, rejected.ref, "--ledger", url,
                          "--reason", "partner lost it")
    assert code == 0 and "1 resend, 1 skipped" in out and "cannot be re-sent" in err
    event = filled.bus.ledger.history(done.ref).events[-1]
    assert event.stage == "resend" and event.detail == "partner lost it" and event.actor
    filled.bus.drain()
    assert filled.bus.ledger.get(done.ref).status is Status.ACKNOWLEDGED

    code, out, _ = _run(capsys, "ledger", "resolve", rejected.ref, "--ledger", url,
                        "--reason", "asked partner to fix", "--actor", "alice")
    assert code == 0
    assert filled.bus.ledger.get(rejected.ref).resolved_by == "alice"


def test_usage_and_not_found(filled: World, capsys: pytest.CaptureFixture[str]) -> None:
    url = filled.bus.ledger.url
    code, _, err = _run(capsys, "ledger", "show", "#999", "--ledger", url)
    assert code == 1 and err.strip() == "kcbus: no message #999 in the ledger"
    code, _, err = _run(capsys, "resend", "--ledger", url, "--reason", "x")
    assert code == 2 and "needs message references" in err
    code, _, err = _run(capsys, "ledger", "prune", "--ledger", url)
    assert code == 2 and "--config" in err
    with pytest.raises(SystemExit) as exit_:
        main(["ledger", "list", "--status", "LOST", "--ledger", url])
    assert exit_.value.code == 2
    assert "no status 'LOST'" in capsys.readouterr().err


def test_rotate_key_then_prune(filled: World, capsys: pytest.CaptureFixture[str]) -> None:
    url = filled.bus.ledger.url
    code, out, _ = _run(capsys, "ledger", "rotate-key", "--ledger", url)
    assert code == 0 and "re-encrypted" in out
    # The running bus picks up the rotated key file when it meets a key it does not know.
    (done,) = filled.bus.ledger.search(MessageFilter(route="bauantrag",
                                                     status=(Status.ACKNOWLEDGED,)))
    assert filled.bus.ledger.content(done.ref, actor="ops", reason="check", now=filled.now)
    # The world's clock stands in March 2026; by the real clock the routes' retention
    # (30 and 90 days) is over, so every settled message goes, with its receipts.
    config = str(filled.config.source)
    code, out, _ = _run(capsys, "ledger", "prune", "--ledger", url, "--config", config)
    assert code == 0 and "pruned 3" in out
    assert filled.bus.ledger.stats() == {}
