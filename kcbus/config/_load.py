"""Load and validate the partner/route config (YAML).

A config is one YAML file or a folder of them (``*.yaml``/``*.yml``, read in name order and
merged: ``partners`` and ``routes`` add up, ``bus`` appears exactly once). Relative paths are
relative to the file that names them. The format, with defaults::

    bus:
      id: kcbus                          # the bus's own key ID prefix in the keystore
      name: kcbus Landkreis Musterkreis
      address: {verzeichnisdienst: DVDV, kennung: "kcbus:musterkreis"}
      keystore: ../var/keystore
      ledger: sqlite:///var/ledger.db    # optional; else --ledger / KCBUS_LEDGER / default
      inbound: [memory://kcbus-inbox]    # shared inbox URLs (optional)
      max_inbound_bytes: 2147483648      # largest envelope read from any inbound URL (bytes;
                                         # default 2 GiB); a URL's ?max_bytes= wins. Larger
                                         # ones are parked (reason envelope-too-large)
    partners:
      gemeinde-a:
        name: Gemeinde A
        address: {verzeichnisdienst: DVDV, kennung: "gemeinde-a"}
        profile: modern                  # or fitconnect
        deliver_to: memory://gemeinde-a  # where kcbus delivers to it
        receive_from: null               # its own inbox for the bus (else the shared one)
        may_send: [baugenehmigung.*]
        production: true
        receipts: [accepted, rejected, delivered]
        peer: null                       # expected transport identity, if checked
    routes:
      bauantrag:
        description: Bauanträge an die Bauaufsicht
        match: {message_types: [baugenehmigung.*], standards: [XBau], senders: [], readers: []}
        to: [leser]                      # partner IDs and/or "leser"
        inspection: full                 # or end-to-end
        schemas: [../schemas/xbau]
        codelists: []
        retry: {attempts: 5, backoff: 30s, max_backoff: 1h, multiplier: 2, jitter: 0.5}
        retention: 365d                  # null: keep forever
        schedule: null                   # cron/preset for the flow's DAG; null: event-driven
        batch_size: 500

Every error is a :class:`~kcbus._errors.ConfigError` naming file, line and field. Errors never
echo a secret: URLs in them are redacted (``kcbus.config._redact``) and a value that should be
a URL but is none is not quoted at all.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from pathlib import Path
from typing import cast

from adapters.transport import DEFAULT_MAX_BYTES
from kcbus._errors import ConfigError
from kcbus.config._model import (
    READER,
    Address,
    BusConfig,
    BusSettings,
    Inspection,
    Partner,
    Profile,
    ReceiptKind,
    RetryPolicy,
    Route,
    RouteMatch,
)
from kcbus.config._yaml import Node, compose_file

__all__ = ["load"]

_ID = r"[a-z0-9][a-z0-9._-]{0,63}"
_TOP = frozenset({"bus", "partners", "routes"})
_BUS = frozenset(
    {
        "id",
        "name",
        "address",
        "keystore",
        "ledger",
        "inbound",
        "max_inbound_bytes",
        "product",
        "vendor",
    }
)
_ADDRESS = frozenset({"verzeichnisdienst", "kennung"})
_PARTNER = frozenset(
    {
        "name",
        "address",
        "profile",
        "deliver_to",
        "receive_from",
        "may_send",
        "production",
        "receipts",
        "peer",
    }
)
_ROUTE = frozenset(
    {
        "description",
        "match",
        "to",
        "inspection",
        "schemas",
        "codelists",
        "retry",
        "retention",
        "schedule",
        "batch_size",
    }
)
_MATCH = frozenset({"message_types", "standards", "senders", "readers"})
_RETRY = frozenset({"attempts", "backoff", "max_backoff", "multiplier", "jitter"})
_PROFILES: tuple[str, ...] = ("modern", "fitconnect")
_INSPECTIONS: tuple[str, ...] = ("full", "end-to-end")
_RECEIPTS: tuple[str, ...] = ("accepted", "rejected", "delivered")


def load(path: Path | str) -> BusConfig:
    """Read a config file or folder; raise :class:`ConfigError` on the first problem."""
    source = Path(path)
    if source.is_dir():
        files = sorted([*source.glob("*.yaml"), *source.glob("*.yml")])
        if not files:
            raise ConfigError(source, None, "", "folder holds no *.yaml file")
    elif source.is_file():
        files = [source]
    else:
        raise ConfigError(source, None, "", "no such config file or folder")

    bus: BusSettings | None = None
    bus_node: Node | None = None
    partners: dict[str, tuple[Partner, Node]] = {}
    routes: dict[str, tuple[Route, Node]] = {}
    for file in files:
        top = compose_file(file).mapping(_TOP)
        if "bus" in top:
            if bus_node is not None:
                raise top["bus"].error(f"bus is already defined in {bus_node.file}:{bus_node.line}")
            bus_node = top["bus"]
            bus = _bus(bus_node)
        if "partners" in top and not top["partners"].is_null():
            for pid, node in top["partners"].mapping().items():
                _check_id(node, pid)
                if pid in partners:
                    first = partners[pid][1]
                    raise node.error(f"partner defined twice (first {first.file}:{first.line})")
                partners[pid] = (_partner(pid, node), node)
        if "routes" in top and not top["routes"].is_null():
            for name, node in top["routes"].mapping().items():
                _check_id(node, name)
                if name in routes:
                    first = routes[name][1]
                    raise node.error(f"route defined twice (first {first.file}:{first.line})")
                routes[name] = (_route(name, node), node)
    if bus is None:
        raise ConfigError(files[0], 1, "bus", "missing (the bus's own id, name, address, keystore)")

    _cross_check(bus, partners, routes)
    return BusConfig(
        source=source,
        bus=bus,
        partners={pid: p for pid, (p, _) in partners.items()},
        routes={name: r for name, (r, _) in routes.items()},
    )


def _check_id(node: Node, value: str) -> None:
    if not re.fullmatch(_ID, value):
        raise node.error("IDs are lower-case letters, digits, '.', '_' or '-' (max 64)")


def _address(node: Node) -> Address:
    fields = node.mapping(_ADDRESS)
    for required in ("verzeichnisdienst", "kennung"):
        if required not in fields:
            raise node.error(f"{required} is missing")
    return Address(fields["verzeichnisdienst"].text(), fields["kennung"].text())


def _bus(node: Node) -> BusSettings:
    f = node.mapping(_BUS)
    for required in ("id", "name", "address", "keystore"):
        if required not in f:
            raise node.error(f"{required} is missing")
    return BusSettings(
        id=f["id"].text(pattern=_ID),
        name=f["name"].text(),
        address=_address(f["address"]),
        keystore=f["keystore"].path(),
        ledger=_optional_url(f.get("ledger")),
        inbound=f["inbound"].texts() if "inbound" in f else (),
        max_inbound_bytes=(
            f["max_inbound_bytes"].integer(minimum=1)
            if "max_inbound_bytes" in f
            else DEFAULT_MAX_BYTES
        ),
        product=f["product"].text() if "product" in f else "kcbus",
        vendor=f["vendor"].text() if "vendor" in f else "Kompetenzcenter Kommunal Digital",
    )


def _optional_url(node: Node | None) -> str | None:
    if node is None or node.is_null():
        return None
    value = node.text()
    if "://" not in value:
        # Not echoed: without a scheme nothing tells which part would be a password.
        raise node.error("must be a URL like memory://name or sftp://host/path")
    return value


def _partner(pid: str, node: Node) -> Partner:
    f = node.mapping(_PARTNER)
    if "name" not in f:
        raise node.error("name is missing")
    receipts: frozenset[ReceiptKind] = frozenset({"accepted", "rejected", "delivered"})
    if "receipts" in f:
        receipts = frozenset(
            cast(ReceiptKind, item.text(choices=_RECEIPTS)) for item in f["receipts"].items()
        )
    return Partner(
        id=pid,
        name=f["name"].text(),
        address=_address(f["address"]) if "address" in f and not f["address"].is_null() else None,
        profile=cast(Profile, f["profile"].text(choices=_PROFILES)) if "profile" in f else "modern",
        deliver_to=_optional_url(f.get("deliver_to")),
        receive_from=_optional_url(f.get("receive_from")),
        may_send=f["may_send"].texts() if "may_send" in f else (),
        production=f["production"].flag() if "production" in f else True,
        receipts=receipts,
        peer=None if "peer" not in f or f["peer"].is_null() else f["peer"].text(),
        line=node.line,
    )


def _retry(node: Node) -> RetryPolicy:
    f = node.mapping(_RETRY)
    default = RetryPolicy()
    policy = RetryPolicy(
        attempts=(
            f["attempts"].integer(minimum=1, maximum=1000) if "attempts" in f else default.attempts
        ),
        backoff=f["backoff"].duration() if "backoff" in f else default.backoff,
        max_backoff=f["max_backoff"].duration() if "max_backoff" in f else default.max_backoff,
        multiplier=(
            f["multiplier"].number(minimum=1.0, maximum=10.0)
            if "multiplier" in f
            else default.multiplier
        ),
        jitter=f["jitter"].number(minimum=0.0, maximum=1.0) if "jitter" in f else default.jitter,
    )
    if policy.max_backoff < policy.backoff:
        raise f.get("max_backoff", node).error("must not be shorter than backoff")
    return policy


def _folders(node: Node) -> tuple[Path, ...]:
    folders = []
    for item in node.nodes():
        path = item.path()
        if not path.is_dir():
            raise item.error(f"folder {path} does not exist")
        folders.append(path)
    return tuple(folders)


def _route(name: str, node: Node) -> Route:
    f = node.mapping(_ROUTE)
    match = RouteMatch()
    if "match" in f and not f["match"].is_null():
        m = f["match"].mapping(_MATCH)
        match = RouteMatch(
            message_types=m["message_types"].texts() if "message_types" in m else (),
            standards=m["standards"].texts() if "standards" in m else (),
            senders=m["senders"].texts() if "senders" in m else (),
            readers=m["readers"].texts() if "readers" in m else (),
        )
    to: tuple[str, ...] = (READER,)
    if "to" in f:
        to = f["to"].texts()
        if not to:
            raise f["to"].error("names no destination")
    retention: timedelta | None = None
    if "retention" in f and not f["retention"].is_null():
        retention = f["retention"].duration()
    return Route(
        name=name,
        description=f["description"].text() if "description" in f else "",
        match=match,
        to=to,
        inspection=(
            cast(Inspection, f["inspection"].text(choices=_INSPECTIONS))
            if "inspection" in f
            else "full"
        ),
        schemas=_folders(f["schemas"]) if "schemas" in f else (),
        codelists=_folders(f["codelists"]) if "codelists" in f else (),
        retry=_retry(f["retry"]) if "retry" in f else RetryPolicy(),
        retention=retention,
        schedule=None if "schedule" not in f or f["schedule"].is_null() else f["schedule"].text(),
        batch_size=(
            f["batch_size"].integer(minimum=1, maximum=100_000) if "batch_size" in f else 500
        ),
        line=node.line,
    )


def _cross_check(
    bus: BusSettings,
    partners: dict[str, tuple[Partner, Node]],
    routes: dict[str, tuple[Route, Node]],
) -> None:
    seen: dict[Address, str] = {bus.address: f"bus {bus.id}"}
    for pid, (partner, node) in partners.items():
        if pid == bus.id:
            raise node.error(f"partner ID {pid!r} is the bus's own ID")
        if partner.address is not None:
            if partner.address in seen:
                raise node.mapping()["address"].error(
                    f"address {partner.address} is already used by {seen[partner.address]}"
                )
            seen[partner.address] = f"partner {pid}"
        if partner.may_send and partner.receipts and partner.deliver_to is None:
            raise node.error(
                "sends messages and gets receipts, so it needs deliver_to "
                "(or set receipts: [] if it takes none)"
            )
    for route, node in routes.values():
        fields = node.mapping()
        for pid in route.to:
            if pid == READER:
                continue
            if pid not in partners:
                raise fields["to"].error(f"no partner {pid!r}{_did_you_mean(pid, partners)}")
            if partners[pid][0].deliver_to is None:
                raise fields["to"].error(f"partner {pid!r} has no deliver_to URL")
        match_node = fields.get("match", node)
        for pid in (*route.match.senders, *route.match.readers):
            if pid not in partners:
                raise match_node.error(f"no partner {pid!r}{_did_you_mean(pid, partners)}")


def _did_you_mean(name: str, known: dict[str, tuple[Partner, Node]]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f", did you mean {close[0]!r}?" if close else ""
