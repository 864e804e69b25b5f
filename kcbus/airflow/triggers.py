"""Event triggers: fire an Airflow asset event while envelopes wait in an inbound queue.

:class:`DropFolderTrigger` watches local drop folders (the embedded default);
:class:`KombuQueueTrigger` watches kombu/AMQP queues (the common-messaging provider has none
for AMQP/kombu). Both are ``BaseEventTrigger`` subclasses for ``AssetWatcher``. The kombu
trigger *counts* the ready messages of one or
more queues with a passive ``queue.declare`` (AMQP 0-9-1 §1.7.2.1: ``passive`` only checks,
``declare-ok`` carries ``message-count``) and never consumes them: the DAG run that the event
starts drains the queue through the transport adapter, which acknowledges only after the
ledger commit. The trigger can therefore never lose or hide a message.

Invariants:

* kombu and directory listings are synchronous: every such call runs in a worker thread
  (``asyncio.to_thread``), so the triggerer's event loop stays free for the other triggers.
* It fires when messages appear (``0 → n``) at once, and again every ``refire_interval``
  seconds while messages stay pending (a run is busy or failed). Extra events are harmless:
  Airflow merges queued asset events into one pending run per DAG and a flow DAG runs with
  ``max_active_runs=1``, so a run always drains whatever is pending.
* Broker outages are recoverable: the trigger logs, backs off and reconnects; it never dies
  because RabbitMQ restarts. A bad URL is a configuration error and ends the trigger.
* Serialises to ``(classpath, kwargs)``; the triggerer rebuilds an equal trigger from them.
  Credentials never go into kwargs (they would land in the serialized DAG): give ``conn_id``
  of an Airflow Connection instead of a URL with a password; a plain ``broker_url`` is for
  credential-free URLs (``memory://``, ``filesystem://``, ``amqp://localhost``). A
  ``broker_url`` with a password or a secret query parameter, or a transport option named
  like a secret, is refused with :class:`CredentialsInTrigger` when the trigger is built.
* Events and logs carry queue names and counts only, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from kcbus.config import redact_url, url_has_secret
from xoev import ConfigurationError

if TYPE_CHECKING:
    from kombu.connection import Connection

__all__ = [
    "CredentialsInTrigger",
    "DropFolderTrigger",
    "FirePolicy",
    "KombuQueueTrigger",
    "QueueProbe",
    "count_ready",
]

_CLASSPATH = "kcbus.airflow.triggers.KombuQueueTrigger"
_FOLDER_CLASSPATH = "kcbus.airflow.triggers.DropFolderTrigger"
#: Names a drop-folder writer uses while a file is incomplete (adapters.transport._dropbox).
_PARTIAL_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", "~")
#: kombu transport options that hold secrets (never serialized; use a Connection).
_SECRET_OPTION = ("pass", "pwd", "token", "secret", "credential", "api_key", "apikey", "access_key")


class CredentialsInTrigger(ConfigurationError):
    """A trigger was given a credential: it would be serialized into the DAG. Name an Airflow
    Connection (``conn_id``) instead. The text shows the URL redacted."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"KombuQueueTrigger: {where} carries a credential, which would be serialized "
            "into the DAG; give conn_id of an Airflow Connection instead"
        )


@dataclass
class FirePolicy:
    """When a pending count becomes an event (pure: time is a parameter)."""

    refire_interval: float
    _last_total: int = 0
    _last_fired: float | None = field(default=None, repr=False)

    def observe(self, total: int, now: float) -> bool:
        """Record one poll's pending total; return whether to fire now."""
        appeared = total > 0 and self._last_total == 0
        lingering = (
            total > 0
            and self._last_fired is not None
            and now - self._last_fired >= self.refire_interval
        )
        self._last_total = total
        if appeared or lingering:
            self._last_fired = now
            return True
        return False


class QueueProbe:
    """Counts ready messages of queues on one kombu connection (blocking; call from a thread).

    A queue that does not exist yet counts as empty (the adapter declares it on first send).
    """

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str],
        *,
        transport_options: Mapping[str, object] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._broker_url = broker_url
        self._queues = tuple(queues)
        self._transport_options = dict(transport_options or {})
        self._connect_timeout = connect_timeout
        self._connection: Connection | None = None

    def pending(self) -> dict[str, int]:
        """Ready (not yet delivered, not unacknowledged) messages per queue."""
        connection = self._connect()
        counts: dict[str, int] = {}
        for queue in self._queues:
            # A fresh channel per queue: a 404 on a passive declare closes the channel (AMQP).
            channel = connection.channel()  # type: ignore[no-untyped-call]
            try:
                _, count, _ = channel.queue_declare(queue=queue, passive=True)
                counts[queue] = int(count)
            except connection.channel_errors:
                counts[queue] = 0
            finally:
                _close_quietly(channel)
        return counts

    def close(self) -> None:
        if self._connection is not None:
            _close_quietly(self._connection)
            self._connection = None

    def reset(self) -> None:
        """Drop the connection after an error; the next :meth:`pending` reconnects."""
        self.close()

    @property
    def recoverable_errors(self) -> tuple[type[BaseException], ...]:
        """Errors after which reconnecting may help (kombu declares them per transport)."""
        from kombu.exceptions import OperationalError

        connection = self._connect_lazily()
        errors: tuple[type[BaseException], ...] = (
            OperationalError,  # kombu's wrapper for "broker refused/unreachable"
            *connection.recoverable_connection_errors,
            *connection.recoverable_channel_errors,
            *connection.connection_errors,
            OSError,
        )
        return errors

    def _connect_lazily(self) -> Connection:
        if self._connection is None:
            from kombu.connection import Connection

            self._connection = Connection(  # type: ignore[no-untyped-call]
                self._broker_url,
                connect_timeout=self._connect_timeout,
                transport_options=self._transport_options,
            )
        return self._connection

    def _connect(self) -> Connection:
        connection = self._connect_lazily()
        connection.ensure_connection(max_retries=1)  # type: ignore[no-untyped-call]
        return connection


def _close_quietly(resource: Any) -> None:
    # Closing a broken connection may fail again; there is nothing left to recover.
    with contextlib.suppress(Exception):
        resource.close()


class KombuQueueTrigger(BaseEventTrigger):
    """Fires an event while any of ``queues`` has messages waiting; consumes nothing.

    :param queues: queue names to watch (the flow's inbound queues).
    :param broker_url: a credential-free kombu URL (``amqp://host:5672//``, ``filesystem://``,
        ``memory://``); exclusive with ``conn_id``.
    :param conn_id: an Airflow Connection holding the broker URL and credentials (resolved in
        the triggerer, never serialized).
    :param poll_interval: seconds between two counts (default 0.5).
    :param refire_interval: seconds between two events while messages stay pending (default 2).
    :param transport_options: kombu transport options (e.g. ``data_folder_in`` for
        ``filesystem://``).
    :param max_backoff: longest wait between reconnect attempts after a broker outage.
    """

    def __init__(
        self,
        *,
        queues: Sequence[str],
        broker_url: str | None = None,
        conn_id: str | None = None,
        poll_interval: float = 0.5,
        refire_interval: float = 2.0,
        transport_options: Mapping[str, object] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if (broker_url is None) == (conn_id is None):
            raise ValueError("KombuQueueTrigger needs exactly one of broker_url, conn_id")
        if not queues:
            raise ValueError("KombuQueueTrigger needs at least one queue")
        if broker_url is not None and _may_carry_secret(broker_url):
            raise CredentialsInTrigger(f"broker_url {_without_userinfo(broker_url)}")
        for option in _option_names(transport_options or {}):
            if any(word in option.lower() for word in _SECRET_OPTION):
                raise CredentialsInTrigger(f"transport option {option!r}")
        self.queues = list(queues)
        self.broker_url = broker_url
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.refire_interval = float(refire_interval)
        self.transport_options = dict(transport_options or {})
        self.max_backoff = float(max_backoff)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _CLASSPATH,
            {
                "queues": list(self.queues),
                "broker_url": self.broker_url,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "refire_interval": self.refire_interval,
                "transport_options": dict(self.transport_options),
                "max_backoff": self.max_backoff,
            },
        )

    async def _resolve_url(self) -> str:
        if self.broker_url is not None:
            return self.broker_url
        assert self.conn_id is not None  # constructor guarantees one of the two
        from airflow.sdk.bases.hook import BaseHook

        from kcbus.airflow.hook import TransportSettings

        connection = await BaseHook.aget_connection(self.conn_id)
        return TransportSettings.from_connection(connection).url

    async def run(self) -> AsyncIterator[TriggerEvent]:
        probe = QueueProbe(
            await self._resolve_url(), self.queues, transport_options=self.transport_options
        )
        policy = FirePolicy(refire_interval=self.refire_interval)
        backoff = self.poll_interval
        try:
            while True:
                try:
                    counts = await asyncio.to_thread(probe.pending)
                except probe.recoverable_errors as exc:
                    self.log.warning(
                        "kcbus trigger: broker unreachable (%s); retrying in %.1f s",
                        type(exc).__name__,
                        backoff,
                    )
                    await asyncio.to_thread(probe.reset)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.poll_interval
                total = sum(counts.values())
                if policy.observe(total, time.monotonic()):
                    self.log.info("kcbus trigger: %d message(s) pending in %s", total, counts)
                    yield TriggerEvent(  # type: ignore[no-untyped-call]
                        {"pending": total, "queues": counts}
                    )
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(probe.close)


def count_ready(folder: str, marker_suffix: str | None = None) -> int:
    """Complete envelopes waiting in one drop folder (blocking; call from a thread).

    Follows the drop-folder rules of :mod:`adapters.transport._dropbox`: dot-files and
    sub-folders (``.tmp``, ``.claimed``, ``.done``, ``.failed``) and names of half-written
    files are not envelopes; with a completion marker only files that have theirs count.
    A missing folder holds nothing.
    """
    try:
        with os.scandir(folder) as entries:
            names = {
                e.name for e in entries
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            }
    except FileNotFoundError:
        return 0
    ready = [n for n in names if not n.endswith(_PARTIAL_SUFFIXES)]
    if marker_suffix:
        ready = [n for n in ready
                 if not n.endswith(marker_suffix) and f"{n}{marker_suffix}" in names]
    return len(ready)


class DropFolderTrigger(BaseEventTrigger):
    """Fires an event while any of ``folders`` (local drop folders) holds complete envelopes.

    The drop folder is the embedded default's transport: crash-safe and cross-process (atomic
    rename on write, claims by rename). Counting is a directory listing in a worker thread;
    nothing is claimed or moved (the DAG run does that through the adapter). Same firing rule
    as :class:`KombuQueueTrigger` (:class:`FirePolicy`).

    :param folders: absolute paths of the inbound drop folders to watch.
    :param poll_interval: seconds between two listings (default 0.25; a listing of a local
        folder costs microseconds).
    :param refire_interval: seconds between two events while envelopes stay (default 2).
    :param marker_suffix: count only files with a completion marker (``complete=marker``).
    """

    def __init__(
        self,
        *,
        folders: Sequence[str],
        poll_interval: float = 0.25,
        refire_interval: float = 2.0,
        marker_suffix: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not folders:
            raise ValueError("DropFolderTrigger needs at least one folder")
        self.folders = [str(f) for f in folders]
        self.poll_interval = float(poll_interval)
        self.refire_interval = float(refire_interval)
        self.marker_suffix = marker_suffix

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _FOLDER_CLASSPATH,
            {
                "folders": list(self.folders),
                "poll_interval": self.poll_interval,
                "refire_interval": self.refire_interval,
                "marker_suffix": self.marker_suffix,
            },
        )

    def _count(self) -> dict[str, int]:
        return {f: count_ready(f, self.marker_suffix) for f in self.folders}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        policy = FirePolicy(refire_interval=self.refire_interval)
        while True:
            try:
                counts = await asyncio.to_thread(self._count)
            except OSError as exc:  # e.g. a stale network mount: log, keep watching
                self.log.warning("kcbus trigger: cannot list drop folder (%s)",
                                 type(exc).__name__)
                await asyncio.sleep(self.poll_interval * 4)
                continue
            total = sum(counts.values())
            if policy.observe(total, time.monotonic()):
                self.log.info("kcbus trigger: %d envelope(s) waiting in %d folder(s)",
                              total, sum(1 for n in counts.values() if n))
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"pending": total, "folders": counts}
                )
            await asyncio.sleep(self.poll_interval)


def _may_carry_secret(url: str) -> bool:
    """A password or secret query value, or a user name alone (a bearer token passed as the
    user, ``amqps://TOKEN@host``, is a secret too; ``guest`` without a password is not worth
    the risk either: a Connection keeps it)."""
    if url_has_secret(url):
        return True
    netloc = urlsplit(url).netloc
    return "@" in netloc


def _without_userinfo(url: str) -> str:
    """``url`` redacted, and a lone user name (maybe a token) masked as well."""
    parts = urlsplit(redact_url(url))
    if "@" not in parts.netloc or parts.password is not None:
        return parts.geturl()
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _option_names(options: Mapping[str, object]) -> Iterator[str]:
    """Every key of ``options``, nested mappings included (``{"ssl": {"password": ...}}``)."""
    for name, value in options.items():
        yield str(name)
        if isinstance(value, Mapping):
            yield from _option_names(value)
