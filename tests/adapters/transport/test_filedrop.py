"""file:// picks up only complete files, never gives one file to two workers, loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adapters.transport import Delivery, Outbound, TransportConfigError, connect
from adapters.transport.filedrop import FileDropTransport


def _open(folder: Path, **options: object) -> FileDropTransport:
    transport = connect(f"file://{folder}", **options)
    assert isinstance(transport, FileDropTransport)
    return transport


def test_a_half_written_file_is_not_picked_up(tmp_path: Path) -> None:
    with _open(tmp_path) as drop:
        # a partner writing under a temporary name, as the convention asks
        (tmp_path / "antrag-1.env.part").write_bytes(b"half of an envel")
        (tmp_path / ".antrag-2.env").write_bytes(b"hidden while written")
        assert drop.receive(10) == []
        (tmp_path / "antrag-1.env.part").rename(tmp_path / "antrag-1.env")
        [delivery] = drop.receive(10)
        assert delivery.envelope_id == "antrag-1"
        drop.acknowledge(delivery)


def test_marker_mode_waits_for_the_completion_marker(tmp_path: Path) -> None:
    with _open(tmp_path, complete="marker") as drop:
        (tmp_path / "antrag.env").write_bytes(b"written in place")
        assert drop.receive(10) == []
        (tmp_path / "antrag.env.ok").write_bytes(b"")
        [delivery] = drop.receive(10)
        assert delivery.read() == b"written in place"
        drop.acknowledge(delivery)
    assert not (tmp_path / "antrag.env.ok").exists()


def test_settle_time_skips_files_still_being_written_in_place(tmp_path: Path) -> None:
    with _open(tmp_path, settle_seconds=60) as drop:
        target = tmp_path / "antrag.env"
        target.write_bytes(b"growing")
        assert drop.receive(10) == []
        old = time.time() - 120
        os.utime(target, (old, old))
        assert [d.envelope_id for d in drop.receive(10)] == ["antrag"]


def test_two_workers_never_take_the_same_file(tmp_path: Path) -> None:
    with _open(tmp_path) as writer:
        for i in range(300):
            writer.send(Outbound(f"e{i:03d}", "bus", data=b"x"))
    taken: dict[str, list[str]] = {"a": [], "b": []}

    def work(name: str) -> None:
        with _open(tmp_path, worker=f"worker-{name}") as drop:
            while batch := drop.receive(7):
                for delivery in batch:
                    taken[name].append(delivery.envelope_id or "")
                    drop.acknowledge(delivery)

    threads = [threading.Thread(target=work, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    both = taken["a"] + taken["b"]
    assert sorted(both) == [f"e{i:03d}" for i in range(300)]  # each exactly once


def test_claims_of_a_dead_worker_come_back_at_once(tmp_path: Path) -> None:
    with _open(tmp_path) as writer:
        writer.send(Outbound("e1", "bus", data=b"x"))
    # a worker process claims the file and dies without acknowledging it
    script = (
        "import os, sys\n"
        "from adapters.transport import connect\n"
        f"t = connect('file://{tmp_path}')\n"
        "assert len(t.receive(1)) == 1\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True,
                   cwd=Path(__file__).resolve().parents[3])
    with _open(tmp_path) as drop:
        [delivery] = drop.receive(10)
        assert delivery.envelope_id == "e1"


def test_old_claims_of_another_host_come_back_after_the_claim_timeout(tmp_path: Path) -> None:
    stale = tmp_path / ".claimed" / "other-host~123~abc"
    stale.mkdir(parents=True)
    (stale / "e1.env").write_bytes(b"x")
    with _open(tmp_path, claim_timeout=600) as drop:
        assert drop.receive(10) == []  # claimed elsewhere a moment ago: not ours
        old = time.time() - 601
        os.utime(stale / "e1.env", (old, old))
        assert drop.recover() == 1
        assert [d.envelope_id for d in drop.receive(10)] == ["e1"]


def test_rejected_files_go_to_failed_with_the_reason(tmp_path: Path) -> None:
    with _open(tmp_path) as drop:
        drop.send(Outbound("e1", "bus", data=b"x"))
        [delivery] = drop.receive(1)
        drop.reject(delivery, "unreadable")
    assert (tmp_path / ".failed" / "e1.env").read_bytes() == b"x"
    assert (tmp_path / ".failed" / "e1.env.reason").read_text() == "unreadable\n"


def test_a_redropped_name_is_kept_apart_from_the_acknowledged_one(tmp_path: Path) -> None:
    with _open(tmp_path) as drop:
        for content in (b"first", b"second"):
            (tmp_path / "same.env").write_bytes(content)
            [delivery] = drop.receive(1)
            assert delivery.read() == content
            drop.acknowledge(delivery)
    assert sorted(p.read_bytes() for p in (tmp_path / ".done").iterdir()) == [b"first",
                                                                               b"second"]


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("not for partners")
    drop_dir = tmp_path / "drop"
    drop_dir.mkdir()
    (drop_dir / "evil.env").symlink_to(secret)
    with _open(drop_dir) as drop:
        assert drop.receive(10) == []


def test_outbound_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    with _open(tmp_path) as drop:
        drop.send(Outbound("e1", "gemeinde-a", data=b"sealed"))
    assert (tmp_path / "e1.env").read_bytes() == b"sealed"
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_a_missing_folder_is_a_configuration_error_when_not_created(tmp_path: Path) -> None:
    with pytest.raises(TransportConfigError):
        _open(tmp_path / "nope", create=False)


def test_an_envelope_id_that_is_no_file_name_is_refused(tmp_path: Path) -> None:
    with _open(tmp_path) as drop, pytest.raises(TransportConfigError):
        drop.send(Outbound("../../etc/passwd", "x", data=b"x"))


def test_closing_gives_back_what_is_held(tmp_path: Path) -> None:
    drop = _open(tmp_path)
    drop.send(Outbound("e1", "bus", data=b"x"))
    held: list[Delivery] = drop.receive(1)
    assert len(held) == 1
    drop.close()
    assert (tmp_path / "e1.env").exists()


def _swap_claimed_for_symlinks(folder: Path, target: Path) -> None:
    for claimed in (folder / ".claimed").rglob("*"):
        if claimed.is_file() and not claimed.is_symlink():
            claimed.unlink()
            claimed.symlink_to(target)


def test_a_file_swapped_for_a_symlink_after_listing_is_never_followed(tmp_path: Path) -> None:
    # A partner with write access to its drop folder races the bus: it lists a plain file,
    # then the partner puts a symlink to a local secret in its place.
    secret = tmp_path / "bus-private-key.jwk"
    secret.write_bytes(b"PRIVATE KEY MATERIAL")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "antrag.env").write_bytes(b"an envelope")
    with _open(inbox) as drop:
        [delivery] = drop.receive(10)
        _swap_claimed_for_symlinks(inbox, secret)
        with pytest.raises(OSError):
            delivery.read()
        drop.reject(delivery, "unreadable-delivery")
    assert b"PRIVATE" not in b"".join(p.read_bytes() for p in inbox.rglob("*")
                                      if p.is_file() and not p.is_symlink())
