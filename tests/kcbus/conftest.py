"""Fixtures for the runtime tests: keys made once per session, a fresh world per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kcbus.world import Keys, World, make_keys, make_world


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def world(tmp_path: Path, keys: Keys) -> Iterator[World]:
    w = make_world(tmp_path, keys)
    yield w
    w.close()
