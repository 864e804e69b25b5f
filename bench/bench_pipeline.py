"""End-to-end pipeline throughput: 20 KB XBau messages through the whole bus on one core.

Setup (not timed): keys for the bus, a municipality and the district office in the profile
under test; N messages sealed by the municipality and queued on the in-memory transport; a
SQLite (WAL) ledger; the XBau 2.6 schemas compiled and its code lists loaded. Timed:
``Bus.drain()`` — receive, open, validate (lxml against XBau 2.6, then the XÖV code-list
check), route, seal for the district office, deliver, and the two receipts back to the
municipality (Eingangsbestätigung, Zustellbestätigung: built, validated, sealed, delivered),
with every transition in the ledger.

Baseline, measured in the same run on the same core: the work no pipeline can skip — open
the envelope, parse hardened, read the header, validate, check the code lists, seal for the
recipient, and build, validate and seal both receipts — in a tight loop without ledger or
transport. The ratio says how much of that limit the whole bus keeps (goal ≥ 0.7); the
``modern`` figure also has the absolute goal of ≥ 1,000 messages/s. Receipts triple the
sealing per message (three envelopes leave for every one that arrives), so ``modern`` is
measured a second time with the sender taking only Rückweisungen (``receipts: [rejected]``):
the message path alone.

Why 1,000 messages/s is out of reach on this CPU: the baseline itself — crypto and
validation with no bus around them — is the ceiling, and it is printed against the 1,000/s
goal (``floor`` figures), with its per-message CPU time split into open, parse + header,
validate + code lists, seal (three envelopes per message with receipts) and receipt
building. Measured on the 2-core machine this was written on (CPU time, shared with other
work, best of runs): the floor is 3.1-4.7 ms per message with receipts (~210-320 msg/s) and
1.7-3.4 ms without (~290-580 msg/s) — the three seals alone take 1.0-1.5 ms (Ed25519 over
~27 KB, X25519 key generation and agreement, AES-GCM and base64 of ~36 KB each), opening
0.4-0.6 ms, parsing + header 0.6-1.0 ms, validation + code lists 0.7-1.1 ms. 1,000/s needs
all of it in 1 ms: a bus with no overhead at all would still reach only a fifth to a third
of the goal here.

Each figure comes twice: by the wall clock, and by CPU time (messages per CPU-second of the
thread running the bus; the recipients' consumer threads are not counted). On a shared machine
the wall clock also counts the time other processes had the core; the CPU-time figure is what
one dedicated core does (it leaves out waiting for fsync, which the ledger does once per
batch).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import xoev
from adapters.envelope import Keystore, open_envelope, seal
from adapters.transport import Outbound, connect
from bench import Figure, one_core
from kcbus.bus import Bus
from kcbus.config import load
from kcbus.ledger import Ledger
from kcbus.receipts import Addressee, Handover, ReceiptBuilder, ReceiptType, Reference

ROOT = Path(__file__).resolve().parents[1]
STANDARDS = ROOT.parent / "shared" / "standards"
SAMPLE = ROOT / "tests" / "xoev" / "data" / "xbau-baugenehmigung-antrag-0200.xml"
PASSPHRASE = "bench"
TARGET_SIZE = 20_000

CONFIG = """\
bus:
  id: kcbus
  name: kcbus Landkreis Musterkreis
  address: {{verzeichnisdienst: DVDV, kennung: "kcbus:091870000000"}}
  keystore: {keys}/kcbus
  inbound: ["memory://{broker}?inbox=kcbus"]
partners:
  gemeinde-a:
    name: Gemeinde Musterdorf
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870120000"}}
    deliver_to: "memory://{broker}"
    may_send: [baugenehmigung.*]
    receipts: {receipts}
  lra:
    name: Landratsamt Musterkreis
    address: {{verzeichnisdienst: DVDV, kennung: "bau:091870000000"}}
    deliver_to: "memory://{broker}"
routes:
  bauantrag:
    match: {{message_types: [baugenehmigung.*]}}
    to: [leser]
    inspection: full
    schemas: [{xbau}]
    codelists: [{codelists}]
"""


def message_20kb() -> bytes:
    """A.'s synthetic XBau Bauantrag, padded with further ``anlage`` entries to ~20 KB."""
    text = SAMPLE.read_text(encoding="utf-8")
    start, end = text.index("<anlage>"), text.index("</anlage>") + len("</anlage>")
    block = text[start:end]
    copies = max(0, (TARGET_SIZE - len(text.encode())) // len(block.encode()))
    return (text[:end] + block * copies + text[end:]).encode()


def _keys(root: Path, profile: str) -> dict[str, Keystore]:
    now = datetime.now(UTC) - timedelta(hours=1)
    stores = {p: Keystore(root / p, PASSPHRASE) for p in ("kcbus", "gemeinde-a", "lra")}
    for party, store in stores.items():
        store.create_identity(party, profile, now=now, rsa_bits=3072)  # type: ignore[arg-type]
    for party, store in stores.items():
        for other, other_store in stores.items():
            if other != party:
                other_store.import_public(party, store.export_public(party), now=now)
    return stores


def _fresh(template: bytes) -> bytes:
    return template.replace(b"6f1c2a7e-3b4d-4c5e-8f90-a1b2c3d4e5f6", str(uuid.uuid4()).encode())


def pipeline_rate(
    root: Path, stores: dict[str, Keystore], n: int, batch: int, *, receipts: bool = True
) -> tuple[float, float]:
    """Messages per second (wall clock, CPU time) through ``Bus.drain``; the municipality's
    sealing is not timed."""
    broker = f"bench{uuid.uuid4().hex[:8]}"
    (root / "kcbus.yaml").write_text(
        CONFIG.format(
            keys=root,
            broker=broker,
            xbau=STANDARDS / "xbau-2.6" / "complete",
            codelists=STANDARDS / "xbau-2.6" / "codelists",
            receipts="[accepted, rejected, delivered]" if receipts else "[rejected]",
        )
    )
    config = load(root / "kcbus.yaml")
    ledger = Ledger(f"sqlite:///{root / f'{broker}.sqlite'}", keys=root / f"{broker}.keys")
    bus = Bus(config, ledger=ledger, keystore=stores["kcbus"], actor="bench")
    template = message_20kb()
    now = datetime.now(UTC)
    with connect(f"memory://{broker}") as outbox:
        for _ in range(n):
            sealed = seal(
                _fresh(template),
                sender="gemeinde-a",
                recipient="kcbus",
                keystore=stores["gemeinde-a"],
                now=now,
            )
            outbox.send(Outbound(sealed.envelope_id, "kcbus", data=sealed.data()))
    route = config.routes["bauantrag"]
    warm = xoev.parse_xml(template)
    bus.runtime.registry(route).validate(warm)
    lists = bus.runtime.codelists(route)
    assert lists is not None
    lists.check(warm, registry=bus.runtime.registry(route))
    # The recipients take what arrives, as real ones do (the in-memory queues stay short).
    stop = threading.Event()
    consumers = [
        threading.Thread(target=_consume, args=(f"memory://{broker}?inbox={p}", stop))
        for p in ("lra", "gemeinde-a")
    ]
    for consumer in consumers:
        consumer.start()
    start, cpu = time.perf_counter(), time.thread_time()
    counts = bus.drain(limit=batch)
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    stop.set()
    for consumer in consumers:
        consumer.join()
    expected = (3 * n, n) if receipts else (n, 0)
    if (counts.delivered, counts.acknowledged) != expected:
        raise RuntimeError(f"pipeline did not finish every message: {counts.as_dict()}")
    bus.close()
    ledger.close()
    return n / elapsed, n / cpu


def _consume(url: str, stop: threading.Event) -> None:
    with connect(url) as inbox:
        while not stop.is_set():
            for delivery in inbox.receive(500, timeout=0.05):
                inbox.acknowledge(delivery)


#: The parts of the baseline, timed separately (CPU seconds) by ``limit_rate(..., parts=...)``.
PARTS = ("open", "parse+header", "validate+codelists", "seal", "receipt build")


def limit_rate(
    stores: dict[str, Keystore],
    n: int,
    *,
    receipts: bool = True,
    parts: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Messages per second (wall clock, CPU time) of the irreducible work alone. With
    ``parts``, the CPU time per part is added to it (a second pass: the clock reads cost)."""
    registry = xoev.SchemaRegistry.from_dirs([STANDARDS / "xbau-2.6" / "complete"])
    lists = xoev.CodeLists.from_dir(STANDARDS / "xbau-2.6" / "codelists")
    builder = ReceiptBuilder(
        Addressee("DVDV", "kcbus:091870000000", "kcbus"),
        product="kcbus",
        vendor="bench",
        product_version="0",
    )
    reader = Addressee("DVDV", "bau:091870120000", "Gemeinde Musterdorf")
    template = message_20kb()
    now = datetime.now(UTC)
    envelopes = [
        seal(
            _fresh(template),
            sender="gemeinde-a",
            recipient="kcbus",
            keystore=stores["gemeinde-a"],
            now=now,
        ).data()
        for _ in range(n)
    ]
    warm = xoev.parse_xml(template)
    registry.validate(warm)
    lists.check(warm, registry=registry)
    tick = time.thread_time if parts is not None else _no_clock
    spent = dict.fromkeys(PARTS, 0.0)

    def took(part: str, since: float) -> float:
        now_ = tick()
        spent[part] += now_ - since
        return now_

    start, cpu = time.perf_counter(), time.thread_time()
    for raw in envelopes:
        t = tick()
        opened = open_envelope(raw, keystore=stores["kcbus"], now=now, replay_guard=None)
        t = took("open", t)
        tree = xoev.parse_xml(opened.message)
        header = xoev.read_header(tree)
        t = took("parse+header", t)
        if not registry.validate(tree).valid or not lists.check(tree, registry=registry).ok:
            raise RuntimeError("bench message is not valid XBau")
        t = took("validate+codelists", t)
        seal(
            opened.message, sender="kcbus", recipient="lra", keystore=stores["kcbus"], now=now
        ).data()
        t = took("seal", t)
        reference = Reference(now, header.message_id, opened.envelope_id, header.message_type)
        for kind in (ReceiptType.ACCEPTED, ReceiptType.DELIVERED) if receipts else ():
            receipt = builder.build(
                kind,
                receipt_uuid=str(uuid.uuid4()),
                now=now,
                reader=reader,
                reference=reference,
                route="bauantrag",
                handovers=[Handover("lra", now, opened.envelope_id)],
            )
            t = took("receipt build", t)
            seal(
                receipt, sender="kcbus", recipient="gemeinde-a", keystore=stores["kcbus"], now=now
            ).data()
            t = took("seal", t)
    rates = n / (time.perf_counter() - start), n / (time.thread_time() - cpu)
    if parts is not None:
        for part, seconds in spent.items():
            parts[part] = parts.get(part, 0.0) + seconds / n
    return rates


def _no_clock() -> float:
    return 0.0


#: Paired rounds per figure: baseline and pipeline back to back, on the same core.
ROUNDS = 3

_Rates = tuple[float, float]  # (wall clock, CPU time)


def _median_pair(rounds: list[tuple[_Rates, _Rates]], clock: int) -> tuple[float, float]:
    """(pipeline, baseline) of the round whose ratio on ``clock`` (0 wall, 1 CPU) is the
    median. Each round measures both back to back, so a burst of someone else's load hits
    both alike; the median round ignores one outlier either way. (Best-of each, as before,
    paired a baseline from one moment with a pipeline from another: the ratio moved by 0.15
    between quiet runs.)"""
    ordered = sorted(rounds, key=lambda r: r[0][clock] / r[1][clock])
    rate, limit = ordered[len(ordered) // 2]
    return rate[clock], limit[clock]


def run(args: argparse.Namespace) -> Iterable[Figure]:
    n = 200 if args.quick else 2000
    root = Path(tempfile.mkdtemp(prefix="kcbus-bench-pipeline-"))
    try:
        for profile in ("modern", "fitconnect"):
            stores = _keys(root / profile, profile)
            count = n if profile == "modern" else max(n // 10, 100)
            variants = (True, False) if profile == "modern" else (True,)
            for receipts in variants:
                # The machine is shared: paired rounds of the same number of messages, the
                # figure from the round with the median ratio (see _median_pair).
                rounds: list[tuple[_Rates, _Rates]] = []
                measure = {
                    "limit": partial(limit_rate, stores, count, receipts=receipts),
                    "rate": partial(
                        pipeline_rate, root / profile, stores, count, batch=500, receipts=receipts
                    ),
                }
                with one_core():
                    for round_ in range(ROUNDS):
                        # alternate which goes first: a warm cache or a clock boost should
                        # not always favour the same side
                        order = ("rate", "limit") if round_ % 2 else ("limit", "rate")
                        got = {side: measure[side]() for side in order}
                        rounds.append((got["rate"], got["limit"]))
                what = "" if receipts else ", receipts off"
                rate, limit = _median_pair(rounds, 0)
                rate_cpu, limit_cpu = _median_pair(rounds, 1)
                if profile == "modern":
                    # Where the floor goes, per message (a separate pass: reading the clock
                    # between parts costs a little, so it is not the pass that is rated).
                    parts: dict[str, float] = {}
                    with one_core():
                        limit_rate(stores, max(count // 4, 50), receipts=receipts, parts=parts)
                    floor_ms = sum(parts.values()) * 1000
                    split = ", ".join(f"{k} {v * 1000:.2f}" for k, v in parts.items())
                    yield Figure(
                        name=f"floor (modern{what}): crypto+validation alone vs the 1,000/s "
                        f"goal; CPU ms/msg {floor_ms:.2f} = {split}",
                        value=limit_cpu,
                        unit="msg/cpu-s",
                        baseline="goal",
                        baseline_value=1000.0,
                        goal=1000.0,
                        goal_on="value",
                    )
                yield Figure(
                    name=f"pipeline end-to-end 20KB XBau ({profile}{what})",
                    value=rate,
                    unit="msg/s",
                    baseline="parse+validate+crypto alone",
                    baseline_value=limit,
                    goal=0.7,
                )
                yield Figure(
                    name=f"pipeline end-to-end 20KB XBau ({profile}{what}), CPU time",
                    value=rate_cpu,
                    unit="msg/cpu-s",
                    baseline="parse+validate+crypto alone, CPU time",
                    baseline_value=limit_cpu,
                    goal=0.7,
                )
                if profile == "modern":
                    yield Figure(
                        name=f"pipeline end-to-end 20KB XBau (modern{what}), absolute",
                        value=rate,
                        unit="msg/s",
                        baseline="goal",
                        baseline_value=1000.0,
                        goal=1000.0,
                        goal_on="value",
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # profiling aid: python -m bench.bench_pipeline
    for figure in run(argparse.Namespace(quick=True)):
        print(figure)
