"""``amqp://`` — envelopes over RabbitMQ with kombu; the same code on kombu's in-process brokers.

Features:

* **Topology per partner** (declared on first use, idempotently): a durable direct exchange
  ``kcbus``; a durable queue ``kcbus.<partner>`` bound with routing key ``<partner>``; a
  dead-letter exchange ``kcbus.dead`` and a durable queue ``kcbus.<partner>.dead`` that receives
  what the partner's queue dead-letters (RabbitMQ ``x-dead-letter-exchange``).
* **No loss on the way in**: messages are persistent (``delivery_mode=2``) and ``send`` returns
  only when the broker has confirmed them (RabbitMQ publisher confirms). ``send_many`` publishes
  a batch and then waits once for all its confirms (one broker disk flush per batch).
  The AMQP ``message_id`` is the envelope id: a publish repeated after a lost confirm may put a
  second copy in the queue, which the ledger recognises by that id (at least once).
* **No loss on the way out**: consumption is with manual acks and a prefetch window;
  ``acknowledge()`` (called after the ledger commit) sends ``basic.ack``; ``release()``
  requeues; ``reject()`` dead-letters. Unacknowledged messages of a closed or broken
  connection return to the queue (AMQP 0-9-1 §4.7) and come again flagged ``redelivered``.
* **Authenticated sender**: on RabbitMQ each message carries ``user_id`` = the connection's
  login, which the broker checks ("validated user-ID"); it becomes ``Delivery.peer``.
* **Retry in one place**: every broker call goes through kombu's ``Connection.ensure`` /
  ``ensure_connection`` with the one retry policy below; when it is spent, the call raises
  :class:`TransportUnavailable`.
* **Size limit and claim check**: envelopes up to ``max_size`` travel in the message body.
  Larger ones need ``claim_check`` (a folder both sides share): the envelope is written there
  atomically (``.tmp`` + rename) and the message carries only its name
  (header ``kcbus-claim-check``); ``Delivery.open()`` streams the file and ``acknowledge()``
  moves it to ``<claim_check>/.done`` (clean-up is retention's job). Without ``claim_check``
  an envelope above ``max_size`` raises :class:`EnvelopeTooLarge`.

URLs: ``amqp://user:password@host:5672/vhost`` (``amqps://`` for TLS);
``kombu+memory://`` (kombu's in-process broker: tests, one-process demos);
``kombu+filesystem:///folder`` (kombu's folder broker: the embedded default across processes).
On the in-process brokers dead-lettering is done by the adapter (publish to the dead queue,
then ack) and there are no publisher confirms or validated user ids.

Options (defaults):

``inbox`` (none)           the partner whose queue ``receive()`` consumes (required to receive)
``exchange`` (``kcbus``)   exchange name; queues are ``<exchange>.<partner>``, dead letters
                           ``<exchange>.<partner>.dead`` via exchange ``<exchange>.dead``
``prefetch`` (256)         unacknowledged messages the broker hands out ahead (``basic.qos``);
                           one ``receive()`` returns at most this many
``max_size`` (16 MiB)      largest body sent inline (RabbitMQ's own limit is 128 MiB by default)
``max_bytes`` (2 GiB)      largest envelope ``receive()`` hands out to be read: the inline body's
                           length, a claim-check file's size (checked again while it is read);
                           a larger one refuses to be read (:class:`DeliveryTooLarge`) and
                           ``reject()`` dead-letters it
``claim_check`` (none)     folder for envelopes above ``max_size``
``confirm`` (true)         publisher confirms
``retries`` (5), ``retry_interval`` (0.5 s), ``retry_max_interval`` (5 s)
                           the retry policy (kombu ``max_retries``/``interval_*``)
``connect_timeout`` (10 s), ``heartbeat`` (60 s; 0 = off)

Errors: broker unreachable, connection lost, confirm refused (``MessageNacked``) →
:class:`TransportUnavailable` (recoverable), after the retry policy is spent; an ack on a lost
channel → :class:`AcknowledgeLost` (recoverable: the message comes again); login refused,
vhost missing, access refused → :class:`TransportConfigError`; an envelope too large without
claim check → :class:`EnvelopeTooLarge`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import amqp.exceptions  # type: ignore[import-untyped]
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from adapters.transport._base import DEFAULT_MAX_BYTES, Delivery, Outbound, TransportBase
from adapters.transport._dropbox import is_safe_name, safe_name
from adapters.transport._errors import (
    AcknowledgeLost,
    EnvelopeTooLarge,
    TransportConfigError,
    TransportError,
    TransportUnavailable,
    UnknownDelivery,
)
from adapters.transport._options import Options, merge_query
from adapters.transport.filedrop import LocalFileSystem

__all__ = ["AmqpTransport", "queue_name"]

R = TypeVar("R")
log = logging.getLogger(__name__)

_CLAIM_HEADER = "kcbus-claim-check"
_SIZE_HEADER = "kcbus-size"
_CONTENT_TYPE = "application/octet-stream"
_KOMBU_SCHEMES = {
    "amqp": "amqp",
    "amqps": "amqps",
    "kombu+memory": "memory",
    "kombu+filesystem": "filesystem",
}
# errors that mean "fix the configuration", never worth a retry
_PERMANENT = (
    amqp.exceptions.AccessRefused,
    amqp.exceptions.NotAllowed,
    amqp.exceptions.NotFound,
    amqp.exceptions.PreconditionFailed,
)


def _outside_claim_folder() -> BinaryIO:
    raise PermissionError(errno.EACCES, "claim-check name points outside the claim folder")


def queue_name(partner: str, exchange: str = "kcbus") -> str:
    """Name of the durable queue that holds envelopes for ``partner``."""
    return f"{exchange}.{partner}"


@dataclass(frozen=True)
class _Outgoing:
    body: bytes
    recipient: str
    headers: dict[str, object]
    properties: dict[str, object]


@dataclass
class _Held:
    epoch: int
    message: Message
    claim: str | None


class AmqpTransport(TransportBase):
    """kombu-based transport; see the module docstring for URLs and options."""

    scheme: ClassVar[str] = "amqp"

    def __init__(
        self,
        kombu_url: str,
        *,
        scheme: str = "amqp",
        inbox: str | None = None,
        exchange: str = "kcbus",
        prefetch: int = 256,
        max_size: int = 16 << 20,
        claim_check: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        confirm: bool = True,
        retries: int = 5,
        retry_interval: float = 0.5,
        retry_max_interval: float = 5.0,
        connect_timeout: float = 10.0,
        heartbeat: float = 60.0,
        transport_options: dict[str, object] | None = None,
    ) -> None:
        self.scheme_name = scheme
        self.inbox = inbox
        self.prefetch = prefetch
        self.max_size = max_size
        self.claim_check = claim_check
        self.max_bytes = max_bytes
        self._virtual = _KOMBU_SCHEMES.get(scheme, "amqp") not in ("amqp", "amqps")
        # publisher confirms are handled here (batched), not by kombu's per-message wait
        options: dict[str, object] = {"confirm_publish": False, **(transport_options or {})}
        self._confirm = confirm
        self._confirming = False
        self._confirm_timeout = 30.0
        self._publisher_channel: object = None
        self._published = 0
        self._unconfirmed: set[int] = set()
        self._declared: set[str] = set()  # partners whose queues this channel declared
        self._nacked = False
        if self._virtual:
            options.setdefault("polling_interval", 0.01)
        self._conn = Connection(  # type: ignore[no-untyped-call]
            kombu_url,
            transport_options=options,
            connect_timeout=connect_timeout,
            heartbeat=0 if self._virtual else heartbeat,
        )
        self._endpoint = self._conn.as_uri()  # password masked by kombu
        self._retries = retries
        #: connection failures seen and retried so far (a health figure for operators)
        self.connection_failures = 0
        self._policy: dict[str, object] = {
            "max_retries": retries,
            "interval_start": 0.0,
            "interval_step": retry_interval,
            "interval_max": retry_max_interval,
            "errback": self._count_failure,
        }
        self._exchange = Exchange(exchange, "direct", durable=True)  # type: ignore[no-untyped-call]
        self._dlx = Exchange(f"{exchange}.dead", "direct", durable=True)  # type: ignore[no-untyped-call]
        self._prefix = exchange
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._buffer: deque[Message] = deque()
        self._held: dict[str, _Held] = {}
        self._queue_cache: dict[str, list[Queue]] = {}
        self._epoch = 0
        self._seen: object = None
        self._tags = itertools.count(1)
        self._claims_fs = LocalFileSystem(fsync=True)
        self._closed = False
        if claim_check is not None:
            for sub in (".tmp", ".done"):
                (claim_check / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(cls, url: str, **options: object) -> AmqpTransport:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        kombu_scheme = _KOMBU_SCHEMES[scheme]
        opts = Options(scheme, merge_query(url, options))
        transport_options: dict[str, object] = {}
        if kombu_scheme == "filesystem":
            folder = Path(unquote(parts.path))
            if parts.netloc not in ("", "localhost") or not folder.is_absolute():
                raise TransportConfigError(
                    "kombu+filesystem needs an absolute folder: kombu+filesystem:///path",
                    transport=scheme,
                )
            for sub in ("queue", "processed", "control"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            # kombu's default control_folder is "control" relative to the working directory:
            # keep the exchange tables inside the broker folder instead.
            transport_options = {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "store_processed": False,
                "processed_folder": str(folder / "processed"),
                "control_folder": str(folder / "control"),
            }
            kombu_url = "filesystem://"
        else:
            kombu_url = f"{kombu_scheme}://{parts.netloc}{parts.path}"  # query = our options
        claim = opts.path("claim_check")
        if claim is None:
            claim_url = opts.optional_text("claim_check_url")
            claim = Path(unquote(urlsplit(claim_url).path)) if claim_url else None
        transport = cls(
            kombu_url,
            scheme=scheme,
            inbox=opts.optional_text("inbox"),
            exchange=opts.text("exchange", "kcbus"),
            prefetch=opts.integer("prefetch", 256, minimum=1),
            max_size=opts.integer("max_size", 16 << 20, minimum=1),
            claim_check=claim,
            max_bytes=opts.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1),
            confirm=opts.boolean("confirm", True),
            retries=opts.integer("retries", 5, minimum=0),
            retry_interval=opts.number("retry_interval", 0.5, minimum=0.0),
            retry_max_interval=opts.number("retry_max_interval", 5.0, minimum=0.0),
            connect_timeout=opts.number("connect_timeout", 10.0, minimum=0.1),
            heartbeat=opts.number("heartbeat", 60.0, minimum=0.0),
            transport_options=transport_options,
        )
        opts.done()
        return transport

    # -- edge translation and the one retry place --------------------------------------------

    def _fail(self, exc: BaseException, what: str) -> TransportError:
        if isinstance(exc, _PERMANENT) or isinstance(exc.__cause__, _PERMANENT):
            return TransportConfigError(
                f"{what}: refused by the broker ({type(exc).__name__})",
                transport=self.scheme_name,
                endpoint=self._endpoint,
            )
        return TransportUnavailable(
            f"{what}: {type(exc).__name__}", transport=self.scheme_name, endpoint=self._endpoint
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (
            OperationalError,
            amqp.exceptions.MessageNacked,
            OSError,
            *self._conn.connection_errors,
            *self._conn.channel_errors,
        )

    def _count_failure(self, exc: BaseException, interval: float) -> None:
        self.connection_failures += 1
        log.info(
            "%s: broker connection failed (%s); retrying in %.1f s",
            self.scheme_name,
            type(exc).__name__,
            interval,
        )

    def _ensure_connected(self) -> None:
        """(Re)connect with the retry policy; a new connection starts a new epoch."""
        if self._conn.connected:
            return
        self._reset()
        try:
            self._conn.ensure_connection(**self._policy)  # type: ignore[no-untyped-call]
        except _PERMANENT as exc:
            raise self._fail(exc, "connect") from exc
        except self._errors() as exc:
            raise self._fail(exc, "connect") from exc

    def _reset(self) -> None:
        """Forget channel state: held deliveries of the old connection are given back by the
        broker (they come again), so acknowledging them later raises AcknowledgeLost."""
        self._epoch += 1
        self._producer = None
        self._publisher_channel = None
        self._consumer = None
        self._buffer.clear()
        if self._conn.connected:
            return
        # a dead connection may fail to close; there is nothing left to do with it
        with contextlib.suppress(Exception):
            self._conn.collect()  # type: ignore[no-untyped-call]

    def _sync_epoch(self) -> None:
        """A new underlying connection (kombu's ``ensure`` may reconnect inside a publish)
        invalidates the consumer, the buffer and every delivery held from the old one."""
        current = self._conn.connection if self._conn.connected else None
        if current is not self._seen:
            self._seen = current
            self._epoch += 1
            self._consumer = None
            self._buffer.clear()

    # -- topology ----------------------------------------------------------------------------

    def _queues(self, partner: str) -> list[Queue]:
        cached = self._queue_cache.get(partner)
        if cached is None:
            cached = self._queue_cache[partner] = self._make_queues(partner)
        return cached

    def _make_queues(self, partner: str) -> list[Queue]:
        main = Queue(  # type: ignore[no-untyped-call]
            queue_name(partner, self._prefix),
            exchange=self._exchange,
            routing_key=partner,
            durable=True,
            queue_arguments=None
            if self._virtual
            else {
                "x-dead-letter-exchange": self._dlx.name,
                "x-dead-letter-routing-key": partner,
            },
        )
        dead = Queue(  # type: ignore[no-untyped-call]
            f"{queue_name(partner, self._prefix)}.dead",
            exchange=self._dlx,
            routing_key=partner,
            durable=True,
        )
        return [main, dead]

    # -- sending ------------------------------------------------------------------------------

    def send(self, item: Outbound) -> None:
        self.send_many([item])

    def send_many(self, items: Sequence[Outbound]) -> None:
        """Publish all, then wait once for the broker's confirms of all of them.

        Returns only when every message is confirmed (persisted by RabbitMQ), like ``send``;
        but the broker confirms a batch with one disk flush instead of one per message.
        """
        messages = [self._prepare(item) for item in items]
        if messages:
            self._publish(messages)

    def _prepare(self, item: Outbound) -> _Outgoing:
        headers: dict[str, object] = {_SIZE_HEADER: item.size}
        if item.size > self.max_size:
            if self.claim_check is None:
                raise EnvelopeTooLarge(
                    transport=self.scheme_name,
                    size=item.size,
                    limit=self.max_size,
                    endpoint=self._endpoint,
                )
            headers[_CLAIM_HEADER] = self._store_claim(item)
            body = b""
        else:
            body = item.read()
        properties: dict[str, object] = {"message_id": item.envelope_id, "app_id": "kcbus"}
        if not self._virtual and self._conn.userid:
            properties["user_id"] = self._conn.userid
        return _Outgoing(body, item.recipient, headers, properties)

    def _publish(self, messages: Sequence[_Outgoing], *, dead: bool = False) -> None:
        """The one retry place for publishing: kombu's ``Connection.ensure`` repeats the whole
        batch after reconnecting (unconfirmed messages may then exist twice: at least once)."""
        self._ensure_connected()

        def publish_batch() -> None:
            producer = self._publisher()
            for message in messages:
                if message.recipient not in self._declared:
                    # once per channel and partner (kombu's per-publish declare= would bind
                    # and compare entities on every message)
                    for queue in self._queues(message.recipient):
                        queue(producer.channel).declare()  # type: ignore[no-untyped-call]
                    self._declared.add(message.recipient)
                producer.publish(  # type: ignore[no-untyped-call]
                    message.body,
                    routing_key=message.recipient,
                    delivery_mode=2,
                    content_type=_CONTENT_TYPE,
                    content_encoding="binary",
                    headers=message.headers,
                    exchange=self._dlx if dead else self._exchange,
                    **message.properties,
                )
                if self._confirming:
                    self._published += 1
                    self._unconfirmed.add(self._published)
            self._await_confirms()

        try:
            self._conn.ensure(self, publish_batch, **self._policy)()  # type: ignore[no-untyped-call]
        except self._errors() as exc:
            self._publisher_channel = None
            raise self._fail(exc, "publish") from exc

    def revive(self, channel: object) -> None:
        """kombu's ``ensure`` calls this after reconnecting: start a fresh publisher."""
        self._publisher_channel = None

    def _publisher(self) -> Producer:
        channel = self._conn.default_channel
        if channel is not self._publisher_channel or self._producer is None:
            self._publisher_channel = channel
            self._producer = Producer(channel, exchange=self._exchange)  # type: ignore[no-untyped-call]
            self._declared = set()
            self._published = 0
            self._unconfirmed = set()
            self._nacked = False
            self._confirming = self._confirm and not self._virtual
            if self._confirming:
                # RabbitMQ publisher confirms: the broker acks (after persisting) each
                # delivery tag, which counts the channel's publishes from 1
                channel.events["basic_ack"].add(self._on_confirm)  # type: ignore[attr-defined]
                channel.events["basic_nack"].add(self._on_refusal)  # type: ignore[attr-defined]
                channel.confirm_select()  # type: ignore[attr-defined]
        return self._producer

    def _on_confirm(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_refusal(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_confirm(delivery_tag, multiple)

    def _await_confirms(self) -> None:
        deadline = time.monotonic() + self._confirm_timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportUnavailable(
                    "the broker did not confirm in time",
                    transport=self.scheme_name,
                    endpoint=self._endpoint,
                )
            try:
                self._conn.drain_events(timeout=remaining)  # type: ignore[no-untyped-call]
            except TimeoutError:
                continue
        if self._nacked:
            self._nacked = False
            raise amqp.exceptions.MessageNacked()

    def _store_claim(self, item: Outbound) -> str:
        assert self.claim_check is not None
        name = safe_name(item.envelope_id, transport=self.scheme_name) + ".env"
        final = str(self.claim_check / name)
        if self._claims_fs.size(final) == item.size:
            return name  # idempotent resend
        part = str(self.claim_check / ".tmp" / f"{name}.{os.getpid()}.{next(self._tags)}.part")
        try:
            with item.stream() as src, self._claims_fs.open_write(part, append=False) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                self._claims_fs.flush_to_disk(dst, part)
            if not self._claims_fs.publish(part, final):
                self._claims_fs.remove(part)
        except OSError as exc:
            raise TransportUnavailable(
                f"claim check folder: error {exc.errno}", transport=self.scheme_name
            ) from exc
        return name

    # -- receiving ----------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        self._buffer.append(message)

    def _start_consumer(self) -> None:
        if self.inbox is None:
            raise TransportConfigError(
                "option inbox is required to receive", transport=self.scheme_name, option="inbox"
            )
        self._ensure_connected()
        self._sync_epoch()
        if self._consumer is not None:
            return
        channel = self._conn.channel()  # type: ignore[no-untyped-call]
        channel.basic_qos(0, self.prefetch, False)
        consumer = Consumer(  # type: ignore[no-untyped-call]
            channel,
            queues=self._queues(self.inbox)[:1],
            on_message=self._on_message,
            no_ack=False,
            auto_declare=False,
        )
        for queue in self._queues(self.inbox):
            queue(channel).declare()  # type: ignore[no-untyped-call]
        consumer.consume()  # type: ignore[no-untyped-call]
        self._consumer = consumer

    def receive(self, max_items: int, timeout: float = 0.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            try:
                self._start_consumer()
                self._fill(max_items, deadline)
                break
            except TransportError:
                raise
            except self._errors() as exc:
                self._reset()
                self.connection_failures += 1
                if attempt >= self._retries:
                    raise self._fail(exc, "receive") from exc
        return self._hand_out(max_items)

    def _fill(self, max_items: int, deadline: float) -> None:
        while len(self._buffer) < max_items and len(self._buffer) + len(self._held) < self.prefetch:
            remaining = deadline - time.monotonic()
            # once something arrived, only take what is already there
            wait = 0.001 if self._buffer or remaining <= 0 else remaining
            before = len(self._buffer)
            try:
                self._conn.drain_events(timeout=wait)  # type: ignore[no-untyped-call]
            except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
                if self._buffer or time.monotonic() >= deadline:
                    return
            if len(self._buffer) == before and (self._buffer or time.monotonic() >= deadline):
                return

    def _hand_out(self, max_items: int) -> list[Delivery]:
        out: list[Delivery] = []
        while self._buffer and len(out) < max_items:
            message = self._buffer.popleft()
            headers = message.headers or {}
            claim = headers.get(_CLAIM_HEADER)
            if claim is not None and self.claim_check is None:
                message.requeue()  # type: ignore[no-untyped-call]
                raise TransportConfigError(
                    "a claim-check message arrived; set claim_check",
                    transport=self.scheme_name,
                    option="claim_check",
                )
            delivery_id = f"{self._epoch}:{message.delivery_tag}"
            claim_name = str(claim) if claim is not None else None
            # the header comes from the sender: a name outside the claim folder ("../key")
            # is never opened, moved or even looked at
            outside = claim_name is not None and not is_safe_name(claim_name)
            self._held[delivery_id] = _Held(self._epoch, message, None if outside else claim_name)
            props = message.properties
            out.append(
                Delivery(
                    delivery_id=delivery_id,
                    envelope_id=props.get("message_id"),
                    size=-1 if outside else self._size_of(message, claim_name),
                    peer=props.get("user_id"),
                    transport=self.scheme_name,
                    opener=_outside_claim_folder if outside else self._opener(message, claim_name),
                    redelivered=bool(message.delivery_info.get("redelivered")),
                    max_bytes=self.max_bytes,
                )
            )
        return out

    def _size_of(self, message: Message, claim: str | None) -> int:
        """What is really there: the inline body's length, or the claim-check file's size
        (the sender's ``kcbus-size`` header only where the file cannot be seen yet)."""
        if claim is None:
            return len(message.body)
        assert self.claim_check is not None
        for candidate in (self.claim_check / claim, self.claim_check / ".done" / claim):
            size = self._claims_fs.size(str(candidate))
            if size is not None:
                return size
        announced = (message.headers or {}).get(_SIZE_HEADER)
        return announced if isinstance(announced, int) else -1

    def _opener(self, message: Message, claim: str | None) -> Callable[[], BinaryIO]:
        if claim is None:
            body: bytes = message.body

            def from_body() -> BinaryIO:
                return io.BytesIO(body)

            return from_body
        assert self.claim_check is not None
        folder, fs = self.claim_check, self._claims_fs

        def from_claim() -> BinaryIO:
            # Whoever can write the claim folder could plant a symlink (to a key, to
            # /proc/self/environ, to /dev/zero): open regular files only, never through a link.
            for candidate in (folder / claim, folder / ".done" / claim):
                try:
                    return fs.open_read(str(candidate))
                except FileNotFoundError:
                    continue
            raise TransportUnavailable("claim-check file is missing", transport=self.scheme_name)

        return from_claim

    def _settle(self, delivery: Delivery, action: Callable[[Message], None]) -> _Held:
        held = self._held.pop(delivery.delivery_id, None)
        if held is None:
            raise UnknownDelivery(transport=self.scheme_name, delivery_id=delivery.delivery_id)
        self._sync_epoch()
        if held.epoch != self._epoch or not self._conn.connected:
            raise AcknowledgeLost(
                "the connection that delivered it is gone",
                transport=self.scheme_name,
                delivery_id=delivery.delivery_id,
            )
        try:
            action(held.message)
        except self._errors() as exc:
            self._reset()
            raise AcknowledgeLost(
                type(exc).__name__, transport=self.scheme_name, delivery_id=delivery.delivery_id
            ) from exc
        return held

    def acknowledge(self, delivery: Delivery) -> None:
        held = self._settle(delivery, lambda m: m.ack())  # type: ignore[no-untyped-call]
        if held.claim is not None and self.claim_check is not None:
            self._claims_fs.publish(
                str(self.claim_check / held.claim),
                str(self.claim_check / ".done" / held.claim),
                sync=False,
            )

    def release(self, delivery: Delivery) -> None:
        self._settle(delivery, lambda m: m.requeue())  # type: ignore[no-untyped-call]

    def reject(self, delivery: Delivery, reason_code: str) -> None:
        if not self._virtual:
            # the queue's x-dead-letter-exchange takes it (RabbitMQ adds x-death headers)
            self._settle(delivery, lambda m: m.reject(requeue=False))  # type: ignore[no-untyped-call]
            return
        # kombu's in-process brokers know no dead-lettering: copy to the dead queue, then ack
        held = self._held.get(delivery.delivery_id)
        if held is not None and self.inbox is not None:
            message = held.message
            headers = dict(message.headers or {})
            headers["kcbus-reject-reason"] = reason_code
            self._publish(
                [
                    _Outgoing(
                        message.body,
                        self.inbox,
                        headers,
                        {"message_id": message.properties.get("message_id")},
                    )
                ],
                dead=True,
            )
        self._settle(delivery, lambda m: m.ack())  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._virtual:
            # kombu's memory broker drops unacknowledged messages on close (do_restore=False);
            # AMQP 0-9-1 requeues them: give them back explicitly to keep the contract
            self._sync_epoch()
            pending = [h.message for h in self._held.values() if h.epoch == self._epoch]
            for message in [*reversed(self._buffer), *reversed(pending)]:
                with contextlib.suppress(*self._errors()):
                    message.requeue()  # type: ignore[no-untyped-call]
        self._held.clear()
        self._buffer.clear()
        try:
            self._conn.release()  # type: ignore[no-untyped-call]
        except self._errors():
            pass  # closing a dead connection: the broker requeues what was unacknowledged
