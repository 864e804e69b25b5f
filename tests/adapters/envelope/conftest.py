"""Keystores for the envelope tests: made once per session (RSA key generation is slow),
copied for tests that change them (rotation, revocation, imports)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.envelope import Keystore, Profile

PASSPHRASE = "correct horse battery staple"
#: The tests' clock: keys are made a day before, envelopes sealed and opened at NOW.
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BEFORE = NOW - timedelta(days=1)

# partner -> profile; every partner knows every other partner's public keys.
PARTNERS: dict[str, Profile] = {
    "bus": "modern",
    "hospital": "modern",
    "gp": "modern",
    "portal": "fitconnect",
    "behoerde": "fitconnect",
}


@dataclass
class World:
    root: Path

    def keystore(self, partner: str) -> Keystore:
        return Keystore(self.root / partner, PASSPHRASE)


def _build(root: Path) -> None:
    stores = {name: Keystore(root / name, PASSPHRASE) for name in PARTNERS}
    for name, profile in PARTNERS.items():
        stores[name].create_identity(name, profile, now=BEFORE, rsa_bits=3072)
    for name, store in stores.items():
        for other, other_store in stores.items():
            if other != name:
                store.import_public(other, other_store.export_public(other), now=BEFORE)


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keystores")
    _build(root)
    return root


@pytest.fixture(scope="session")
def world(world_template: Path) -> World:
    """Shared keystores: for tests that only seal and open."""
    return World(world_template)


@pytest.fixture(scope="session")
def stores(world: World) -> dict[str, Keystore]:
    """One unlocked keystore per partner, shared by the read-only tests (unlocking costs an
    scrypt derivation)."""
    return {name: world.keystore(name) for name in PARTNERS}


@pytest.fixture
def own_world(world_template: Path, tmp_path: Path) -> Iterator[World]:
    """A private copy of the keystores, for tests that rotate, revoke or import."""
    root = tmp_path / "keystores"
    shutil.copytree(world_template, root)
    yield World(root)
