"""Fixtures for the xoev tests: the official packages from ../shared/standards, read in place."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xoev import CodeLists, SchemaRegistry

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def xbau_message() -> bytes:
    return (DATA / "xbau-baugenehmigung-antrag-0200.xml").read_bytes()


@pytest.fixture(scope="session")
def xbau_registry(standards: Path) -> SchemaRegistry:
    """The XBau release set (absolute imports) resolved offline against complete/."""
    return SchemaRegistry.from_dirs(
        [standards / "xbau-2.6/release", standards / "xbau-2.6/complete"],
        clock=time.perf_counter,
    )


@pytest.fixture(scope="session")
def xbau_codelists(standards: Path) -> CodeLists:
    return CodeLists.from_dir(standards / "xbau-2.6/codelists")


@pytest.fixture(scope="session")
def netex_registry(standards: Path) -> SchemaRegistry:
    """NeTEx compiles in ~30 s: once per session (the registry caches per process)."""
    return SchemaRegistry.from_dirs([standards / "netex-2.0/xsd"], clock=time.perf_counter)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a socket fails the test."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
