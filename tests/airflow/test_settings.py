"""Expanded config copies (``$KCBUS_VAR/.config/<digest>/``) may hold ``${VAR}`` credentials:
they are deleted once unused, never while in use, and nothing else in the folder is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import kcbus.airflow.settings as settings
from kcbus.airflow.settings import STALE_AFTER, expanded_config, load_config, remove_stale_copies

BUS = """\
bus:
  id: kcbus
  name: kcbus Musterkreis
  address: {verzeichnisdienst: DVDV, kennung: "kcbus:musterkreis"}
  keystore: /srv/keys
  ledger: postgresql://kcbus:${KCBUS_LEDGER_PASSWORD}@db/ledger
"""
LONG_AGO = time.time() - 2 * STALE_AFTER


@pytest.fixture
def var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KCBUS_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("KCBUS_LEDGER_PASSWORD", "first-s3cret")
    return tmp_path / "var"


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "config" / "bus.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(BUS)
    return config


def _age(path: Path, when: float = LONG_AGO) -> None:
    os.utime(path, (when, when))


def _copies(var: Path) -> set[str]:
    return {p.name for p in (var / ".config").iterdir()}


def test_a_new_copy_removes_old_copies_holding_old_credentials(
    tmp_path: Path, var: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    old = expanded_config(config).parent
    assert "first-s3cret" in (old / "bus.yaml").read_text()
    _age(old)
    # The password is rotated: the next parse writes a new copy and removes the unused old one.
    monkeypatch.setenv("KCBUS_LEDGER_PASSWORD", "second-s3cret")
    new = expanded_config(config).parent
    assert new != old
    assert _copies(var) == {new.name}
    assert not any("first-s3cret" in p.read_text() for p in (var / ".config").rglob("*.yaml"))


def test_a_copy_in_use_is_kept_and_using_it_keeps_it_fresh(
    tmp_path: Path, var: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    first = expanded_config(config).parent
    _age(first)
    assert expanded_config(config).parent == first  # another DAG parse of the same config
    assert first.stat().st_mtime > LONG_AGO  # touched: it counts as used now
    monkeypatch.setenv("KCBUS_LEDGER_PASSWORD", "second-s3cret")
    second = expanded_config(config).parent
    assert _copies(var) == {first.name, second.name}  # the first one is still in use


def test_only_what_the_module_writes_is_removed(tmp_path: Path, var: Path) -> None:
    folder = var / ".config"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.yaml").write_text("x")
    staging = folder / ".0123456789abcdef.4242.tmp"  # left by a writer that crashed
    staging.mkdir()
    (staging / "bus.yaml").write_text("half")
    stale = folder / "fedcba9876543210"
    stale.mkdir()
    (stale / "bus.yaml").write_text("old")
    (folder / "aaaaaaaaaaaaaaaa").symlink_to(elsewhere, target_is_directory=True)
    (folder / "notes").mkdir()  # not a name this module writes
    nested = folder / "bbbbbbbbbbbbbbbb"  # named like a copy, but not laid out like one
    (nested / "sub").mkdir(parents=True)
    for path in (staging, stale, folder / "notes", nested):
        _age(path)
    removed = remove_stale_copies(folder, keep="cccccccccccccccc")
    assert sorted(removed) == [staging.name, stale.name]
    assert _copies(var) == {"aaaaaaaaaaaaaaaa", "notes", "bbbbbbbbbbbbbbbb"}
    assert (elsewhere / "keep.yaml").read_text() == "x"  # never followed the symlink


def test_age_is_measured_from_the_last_use(tmp_path: Path) -> None:
    folder = tmp_path / ".config"
    copy = folder / "0123456789abcdef"
    copy.mkdir(parents=True)
    used = copy.stat().st_mtime
    assert remove_stale_copies(folder, now=used + STALE_AFTER - 1) == []
    assert remove_stale_copies(folder, now=used + STALE_AFTER + 1) == [copy.name]
    assert not copy.exists()


def test_a_copy_removed_between_lookup_and_read_is_written_again(
    tmp_path: Path, var: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    calls: list[Path] = []

    def expanded_then_removed(source: Path) -> Path:
        copy = expanded_config(source)
        if not calls:  # a concurrent cleaner wins the race once
            for file in copy.parent.iterdir():
                file.unlink()
            copy.parent.rmdir()
        calls.append(copy)
        return copy

    monkeypatch.setattr(settings, "expanded_config", expanded_then_removed)
    loaded = load_config(config)
    assert loaded.bus.ledger == "postgresql://kcbus:first-s3cret@db/ledger"
    assert len(calls) == 2
