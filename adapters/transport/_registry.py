"""The URL-scheme registry: ``connect(url, **options)`` opens the transport for a URL.

Like kombu's ``TRANSPORT_ALIASES``, entries are import paths, resolved on first use, so
importing :mod:`adapters.transport` pulls in neither paramiko, httpx nor kombu. An unknown
scheme is answered with the closest registered one ("no such transport: sfpt, did you mean
sftp?"). Options come from keyword arguments and the URL's query string (keywords win); each
transport refuses options it does not know.

==================  ============================================  ===========================
scheme              transport                                     twin / real server in tests
==================  ============================================  ===========================
``memory``          :mod:`adapters.transport.memory`               in-process
``file``            :mod:`adapters.transport.filedrop`             a local folder
``sftp``            :mod:`adapters.transport.sftp`                 OpenSSH sshd
``https``           :mod:`adapters.transport.https` (outbox        our inbox server behind mTLS
                    client; ``listen=true``: the inbox server)
``amqp``/``amqps``  :mod:`adapters.transport.amqp` on RabbitMQ     RabbitMQ
``kombu+memory``    the AMQP adapter on kombu's ``memory://``      in-process (twin)
``kombu+filesystem`` the AMQP adapter on kombu's ``filesystem://``  a local folder
==================  ============================================  ===========================
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from adapters.transport._base import Transport
from adapters.transport._errors import NoSuchTransport, TransportConfigError

__all__ = ["TRANSPORTS", "connect", "register"]

Factory = Callable[..., Transport]

#: scheme -> "module:callable"; the callable takes (url, **options) and returns a Transport.
TRANSPORTS: dict[str, str] = {
    "memory": "adapters.transport.memory:MemoryTransport.from_url",
    "file": "adapters.transport.filedrop:FileDropTransport.from_url",
    "sftp": "adapters.transport.sftp:SftpTransport.from_url",
    "https": "adapters.transport.https:from_url",
    "amqp": "adapters.transport.amqp:AmqpTransport.from_url",
    "amqps": "adapters.transport.amqp:AmqpTransport.from_url",
    "kombu+memory": "adapters.transport.amqp:AmqpTransport.from_url",
    "kombu+filesystem": "adapters.transport.amqp:AmqpTransport.from_url",
}


def register(scheme: str, target: str) -> None:
    """Add or replace a transport: ``target`` is ``"module:callable"`` (callable(url, **opts))."""
    if ":" not in target:
        raise ValueError("target must look like 'package.module:callable'")
    TRANSPORTS[scheme.lower()] = target


def _resolve(target: str) -> Factory:
    module_name, _, attr_path = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return cast(Factory, obj)


def connect(url: str, **options: object) -> Transport:
    """Open the transport for ``url``; the caller closes it (or uses ``with``)."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise TransportConfigError("URL has no scheme (e.g. file:///srv/drop)", transport="?")
    target = TRANSPORTS.get(scheme)
    if target is None:
        close = difflib.get_close_matches(scheme, list(TRANSPORTS), n=1, cutoff=0.5)
        raise NoSuchTransport(scheme, close[0] if close else None)
    return _resolve(target)(url, **options)
