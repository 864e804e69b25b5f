"""connect() opens transports by URL scheme and refuses what it does not know."""

from __future__ import annotations

import pytest

from adapters.transport import (
    NoSuchTransport,
    Transport,
    TransportConfigError,
    connect,
)
from xoev import ConfigurationError


def test_unknown_scheme_names_the_closest_transport() -> None:
    with pytest.raises(NoSuchTransport) as info:
        connect("sfpt://partner.example/inbox")
    assert str(info.value) == "no such transport: sfpt, did you mean sftp?"
    assert info.value.suggestion == "sftp"
    assert isinstance(info.value, ConfigurationError)


def test_unknown_scheme_without_a_near_match() -> None:
    with pytest.raises(NoSuchTransport, match=r"^no such transport: gopher$"):
        connect("gopher://x")


def test_unknown_option_is_refused_with_the_known_ones() -> None:
    with pytest.raises(TransportConfigError) as info:
        connect("memory://registry-test", inbx="a")
    assert info.value.option == "inbx"
    assert "inbox" in str(info.value)


def test_query_options_are_typed() -> None:
    with pytest.raises(TransportConfigError, match="max_size: must be an integer"):
        connect("memory://registry-test?max_size=lots")


def test_memory_transport_implements_the_protocol() -> None:
    with connect("memory://registry-test?inbox=a") as transport:
        assert isinstance(transport, Transport)
