"""Backup, wipe, restore: the ledger and its encrypted content come back byte-identical, and a
message re-sent after the restore reaches its recipient again."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcbus.cli import main
from kcbus.ledger import Kind, Ledger, MessageFilter, Status
from tests.kcbus.world import Keys, make_world, xbau_antrag


def _wipe(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_backup_wipe_restore_is_byte_identical_and_resend_works(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    world = make_world(tmp_path / "w", keys)
    db = tmp_path / "w" / "ledger.sqlite"
    url = f"sqlite:///{db}"
    try:
        sent = [xbau_antrag(), xbau_antrag(), xbau_antrag(drop="xbau:referenzAntragsservice")]
        for message in sent:
            world.send("gemeinde-a", message)
        world.bus.drain()
        first, _ = world.collect("lra")
        assert len(first) == 2
        before = world.bus.ledger.fingerprint()
        delivered = world.bus.ledger.search(MessageFilter(status=(Status.ACKNOWLEDGED,)))
        target = delivered[0]
        world.bus.ledger.close()

        backup = tmp_path / "backup" / "ledger-backup.sqlite"
        assert main(["ledger", "backup", str(backup), "--ledger", url, "--actor", "ops"]) == 0
        _wipe(db)
        with Ledger(url) as empty:  # a fresh, empty ledger (same content key file)
            assert empty.stats() == {}
        assert main(["ledger", "restore", str(backup), "--ledger", url, "--actor", "ops"]) == 0
        capsys.readouterr()

        with Ledger(url) as restored:
            after = restored.fingerprint()
            # the audit table gains the restore's own row; everything else is identical
            assert {t: d for t, d in after.items() if t != "audit"} == {
                t: d for t, d in before.items() if t != "audit"
            }
            # the content decrypts again (same key file), and reading it is itself recorded
            assert restored.content(target.ref, actor="ops", reason="drill",
                                    now=world.now) in first
            assert restored.history(target.ref).events[-1].stage == "content-viewed"
        # a restored ledger refuses a second restore on top of itself
        assert main(["ledger", "restore", str(backup), "--ledger", url]) == 2
        assert "not empty" in capsys.readouterr().err

        assert main(["resend", target.ref, "--ledger", url, "--reason", "restore drill",
                     "--actor", "ops"]) == 0
        world.bus.ledger = world.bus.runtime.ledger = Ledger(url)
        world.bus.drain()
        again, _ = world.collect("lra")
        assert len(again) == 1 and again[0] in first
        history = world.bus.ledger.history(target.ref)
        resend = next(e for e in history.events if e.stage == "resend")
        assert (resend.actor, resend.detail) == ("ops", "restore drill")
        assert history.message.status is Status.ACKNOWLEDGED
        assert len(world.bus.ledger.search(MessageFilter(kind=Kind.MESSAGE))) == 3
    finally:
        world.close()


def test_restore_refuses_a_file_that_is_no_backup(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"not a database at all" * 100)
    with Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}") as ledger:
        from kcbus._errors import LedgerError

        with pytest.raises(LedgerError, match="not a kcbus ledger backup"):
            from datetime import UTC, datetime

            ledger.restore(bogus, actor="ops", now=datetime.now(UTC))


def _set_backup_revision(backup: Path, revision: str) -> None:
    import sqlite3

    with sqlite3.connect(backup) as db:
        db.execute("UPDATE backup_info SET value = ? WHERE name = 'revision'", (revision,))
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))


@pytest.mark.parametrize(("revision", "restores"), [("0001", True), ("0099", False)])
def test_backups_of_older_schema_revisions_restore_when_their_rows_still_fit(
    tmp_path: Path, revision: str, restores: bool
) -> None:
    # 0002 only added an index: a backup taken before that upgrade must still come back
    # (a disaster-recovery drill must not fail because the software was updated meanwhile).
    from datetime import UTC, datetime

    from kcbus._errors import LedgerError

    now = datetime.now(UTC)
    backup = tmp_path / "old.sqlite"
    with Ledger(f"sqlite:///{tmp_path / 'src.sqlite'}") as source:
        source.record("drill", actor="ops", detail="before backup", now=now)
        source.backup(backup, actor="ops", now=now)
    _set_backup_revision(backup, revision)
    with Ledger(f"sqlite:///{tmp_path / 'dst.sqlite'}") as target:
        if restores:
            target.restore(backup, actor="ops", now=now)
        else:
            with pytest.raises(LedgerError, match="schema 0099"):
                target.restore(backup, actor="ops", now=now)
