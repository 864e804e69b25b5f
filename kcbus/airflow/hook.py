"""Airflow Connection → kcbus transport adapter.

A kcbus Connection (conn type ``kcbus``) names one partner endpoint. It is parsed once into
a typed :class:`TransportSettings` (adapter URL + scalar options) and handed to
``adapters.transport.connect(url, **options)``.

Connection fields (Airflow UI, ``AIRFLOW_CONN_<ID>`` JSON, or a secrets backend):

=============  ===========================================================================
field          meaning
=============  ===========================================================================
conn_type      ``kcbus`` (the transport then comes from ``extra.transport``), or directly a
               transport scheme: ``file``, ``sftp``, ``https``, ``amqp``, ``memory``,
               ``filesystem``
host, port     the endpoint (``sftp``, ``https``, ``amqp``)
schema         the path: drop folder, SFTP directory, HTTPS path or AMQP vhost
login/password credentials; added to the URL, never logged (``redacted_url``)
extra.url      a complete adapter URL instead of host/port/schema (credentials still come
               from login/password)
extra.*        every other key is passed to the adapter as an option; values must be
               strings, numbers or booleans
=============  ===========================================================================

In the route config an endpoint can name a Connection instead of a URL:
``conn://<conn_id>?inbox=bus-x`` (:func:`open_endpoint`; query options override the extras).
That keeps credentials out of the config and out of serialized triggers.

Errors: a connection that cannot be turned into an adapter URL raises
:class:`ConnectionConfigError` (a ``ConfigurationError``): an operator must fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from airflow.sdk.bases.hook import BaseHook

from xoev import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.transport import Transport

__all__ = [
    "ConnectionConfigError",
    "KcbusTransportHook",
    "OptionValue",
    "TransportSettings",
    "open_endpoint",
]

OptionValue = str | int | float | bool

#: Keys of ``extra`` that shape the URL instead of becoming adapter options.
_URL_KEYS = frozenset({"transport", "url"})
#: Schemes whose path is one opaque segment (AMQP vhost "/" is "%2F", RabbitMQ convention).
_OPAQUE_PATH_SCHEMES = frozenset({"amqp", "amqps"})


class ConnectionConfigError(ConfigurationError):
    """An Airflow Connection cannot be turned into a kcbus adapter configuration."""

    reason_code = "configuration"

    def __init__(self, conn_id: str, problem: str) -> None:
        super().__init__(f"connection {conn_id!r}: {problem}")
        self.conn_id = conn_id
        self.problem = problem


class _ConnectionLike(Protocol):
    """The fields of an Airflow Connection this module reads (task-SDK or core model)."""

    conn_id: str
    conn_type: str | None
    host: str | None
    schema: str | None
    login: str | None
    password: str | None
    port: int | None

    @property
    def extra_dejson(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class TransportSettings:
    """Typed adapter configuration parsed from one Connection."""

    conn_id: str
    scheme: str
    url: str = field(repr=False)  # may contain credentials
    redacted_url: str
    options: Mapping[str, OptionValue] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_connection(cls, conn: _ConnectionLike) -> TransportSettings:
        extra = _extra_of(conn)
        conn_type = (conn.conn_type or "").strip().lower()
        scheme: str
        if conn_type in ("", "kcbus"):
            transport = extra.get("transport")
            url_extra = extra.get("url")
            if isinstance(transport, str) and transport:
                scheme = transport.lower()
            elif isinstance(url_extra, str) and "://" in url_extra:
                scheme = urlsplit(url_extra).scheme.lower()
            else:
                raise ConnectionConfigError(
                    conn.conn_id, "extra.transport or extra.url is required"
                )
        else:
            scheme = conn_type

        base = extra.get("url")
        if base is not None:
            if not isinstance(base, str) or "://" not in base:
                raise ConnectionConfigError(conn.conn_id, "extra.url must be a URL")
            url, redacted = _with_credentials(conn.conn_id, base, conn.login, conn.password)
        else:
            url, redacted = _build_url(scheme, conn)

        options: dict[str, OptionValue] = {}
        for key, value in extra.items():
            if key in _URL_KEYS:
                continue
            if not isinstance(value, str | int | float | bool):
                raise ConnectionConfigError(
                    conn.conn_id, f"extra.{key} must be a string, number or boolean"
                )
            options[key] = value
        return cls(
            conn_id=conn.conn_id,
            scheme=scheme,
            url=url,
            redacted_url=redacted,
            options=MappingProxyType(options),
        )


def _extra_of(conn: _ConnectionLike) -> dict[str, object]:
    try:
        extra = conn.extra_dejson
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConnectionConfigError(conn.conn_id, "extra is not valid JSON") from exc
    return dict(extra)


def _userinfo(login: str | None, password: str | None) -> tuple[str, str]:
    if not login and not password:
        return "", ""
    user = quote(login or "", safe="")
    if password:
        return f"{user}:{quote(password, safe='')}@", f"{user}:***@"
    return f"{user}@", f"{user}@"


def _build_url(scheme: str, conn: _ConnectionLike) -> tuple[str, str]:
    real_user, shown_user = _userinfo(conn.login, conn.password)
    host = conn.host or ""
    port = f":{conn.port}" if conn.port else ""
    path = conn.schema or ""
    if scheme in _OPAQUE_PATH_SCHEMES:
        path = "/" + quote(path, safe="") if path else ""
    elif path:
        path = "/" + quote(path.lstrip("/"), safe="/")
    return (
        f"{scheme}://{real_user}{host}{port}{path}",
        f"{scheme}://{shown_user}{host}{port}{path}",
    )


def _with_credentials(
    conn_id: str, url: str, login: str | None, password: str | None
) -> tuple[str, str]:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.password:
        # A password inside extra.url would be stored unmasked; it belongs in the password field.
        raise ConnectionConfigError(conn_id, "extra.url must not contain a password")
    real_user, shown_user = _userinfo(login or parts.username, password)
    return (
        urlunsplit(parts._replace(netloc=real_user + netloc)),
        urlunsplit(parts._replace(netloc=shown_user + netloc)),
    )


class KcbusTransportHook(BaseHook):
    """Builds a kcbus transport adapter from an Airflow Connection.

    Like every Airflow hook, construction only stores the connection id; the Connection is
    read (once) on first use, in the worker.
    """

    conn_name_attr = "kcbus_conn_id"
    default_conn_name = "kcbus_default"
    conn_type = "kcbus"
    hook_name = "kcbus transport"

    def __init__(self, kcbus_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.kcbus_conn_id = kcbus_conn_id

    @cached_property
    def settings(self) -> TransportSettings:
        return TransportSettings.from_connection(self.get_connection(self.kcbus_conn_id))

    def get_conn(self) -> Transport:
        """Open the adapter (``adapters.transport.connect``); the caller closes it."""
        from adapters.transport import connect

        settings = self.settings
        self.log.info("kcbus: opening %s transport %s", settings.scheme, settings.redacted_url)
        return connect(settings.url, **dict(settings.options))


def open_endpoint(url: str, *, max_bytes: int | None = None) -> Transport:
    """Open a transport for an endpoint URL of the route config.

    ``conn://<conn_id>?opt=value`` takes URL and credentials from the Airflow Connection
    ``conn_id`` (query options override the Connection's extras); every other URL goes to
    ``adapters.transport.connect`` as it is. ``max_bytes`` (an inbound endpoint: the bus's
    ``max_inbound_bytes``) applies unless the URL or the Connection sets its own.
    """
    from adapters.transport import connect

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme.lower() != "conn":
        if max_bytes is None or "max_bytes" in query:
            return connect(url)
        return connect(url, max_bytes=max_bytes)
    settings = KcbusTransportHook(parts.netloc).settings
    options: dict[str, OptionValue] = dict(settings.options)
    options.update(query)
    if max_bytes is not None:
        options.setdefault("max_bytes", max_bytes)
    return connect(settings.url, **options)
