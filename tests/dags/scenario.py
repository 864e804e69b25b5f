"""The demo flows as a test scenario: the repository's demo config with other transports.

:func:`make_config` rewrites ``config/*.yaml`` (the demo's partners and routes) for a test:
the embedded default's kombu folder broker and drop folders become the in-memory twin
(``memory://<name>``) or real servers, and the ledger goes where the test says. The partners,
routes, schemas and traffic stay the demo's, so the tests run the same flows a user sees.
"""

from __future__ import annotations

import itertools
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kcbus.airflow.demo.traffic import Expectation
from kcbus.airflow.demo.world import Arrival, DemoWorld
from kcbus.receipts import ReceiptType

__all__ = [
    "FLOWS",
    "PASSPHRASE",
    "Clock",
    "Keys",
    "collect_all",
    "expect_arrivals",
    "make_config",
    "make_keys",
    "memory_endpoints",
]

FLOWS = ("entlassbrief", "bauantrag", "tarifdaten", "kommunen")
#: Demo senders whose config asks for Zustellbestätigungen (the default: all receipts).
WANTS_RECEIPTS = {"lra-musterkreis", "gemeinde-musterdorf", "stadt-beispielstadt",
                  "klinikum-musterkreis", "tarif-rmv"}

PROJECT = Path(__file__).resolve().parents[2]
PASSPHRASE = "kcbus-test-passphrase"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

_DROP_IN = re.compile(r"file://\$\{KCBUS_VAR\}/(drop|batch)/von-([a-z0-9-]+)")
_DROP_OUT = re.compile(r"file://\$\{KCBUS_VAR\}/(drop|batch)/an-([a-z0-9-]+)")


@dataclass(frozen=True)
class Keys:
    """Keystore folders of the bus (``kcbus``) and every demo partner, made once."""

    root: Path

    def copy_to(self, target: Path) -> Path:
        shutil.copytree(self.root, target)
        return target


def make_keys(root: Path) -> Keys:
    from kcbus.airflow.settings import load_config

    folder = root / "src"
    config_dir = make_config(root / "cfg", keys=folder, endpoints=memory_endpoints("keys"))
    world = DemoWorld(load_config(config_dir), folder / "partners", PASSPHRASE)
    world.prepare_keys(T0 - timedelta(days=1))
    return Keys(folder)


def memory_endpoints(name: str) -> Callable[[str], str]:
    """Endpoint rewriting for the in-memory twin: one named broker for everything."""

    def rewrite(text: str) -> str:
        text = _DROP_IN.sub(lambda m: f"memory://{name}?inbox=bus-{m.group(2)}", text)
        return _DROP_OUT.sub(f"memory://{name}", text)

    return rewrite


def make_config(
    target: Path,
    *,
    keys: Path,
    endpoints: Callable[[str], str],
    ledger: str | None = None,
) -> Path:
    """A copy of ``config/`` with endpoints rewritten, keystore at ``keys/kcbus``."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted((PROJECT / "config").glob("*.yaml")):
        text = endpoints(source.read_text(encoding="utf-8"))
        text = text.replace("${KCBUS_VAR}/keystore", str(keys / "kcbus"))
        text = text.replace("${KCBUS_HOME}", str(PROJECT))
        if source.name == "bus.yaml" and ledger is not None:
            text = text.rstrip("\n") + f"\n  ledger: {ledger}\n"
        (target / source.name).write_text(text, encoding="utf-8")
    return target


class Clock:
    """Moves one second per call, so every message has its own creation time."""

    def __init__(self, start: datetime) -> None:
        self._ticks = itertools.count()
        self.start = start

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=next(self._ticks))


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def collect_all(world: DemoWorld, scratch: Path) -> list[Arrival]:
    """Everything every demo partner has received (opened and acknowledged)."""
    now = datetime.now(tz=UTC)
    arrivals: list[Arrival] = []
    for partner, p in world.config.partners.items():
        if p.deliver_to:
            arrivals.extend(world.collect(partner, now, scratch))
    return arrivals


def expect_arrivals(expectations: list[Expectation], arrivals: list[Arrival]) -> None:
    """Recipients hold their messages; senders hold their receipts."""
    got = {(a.recipient, a.message_id) for a in arrivals if a.receipt is None}
    for exp in expectations:
        for recipient in exp.recipients:
            assert (recipient, exp.sent.message_id) in got, (exp.sent.flow, recipient)
    receipts = {(a.recipient, a.message_id, a.receipt) for a in arrivals if a.receipt}
    for exp in expectations:
        if exp.outcome == "rejected":
            assert (exp.sent.sender, exp.sent.message_id, ReceiptType.REJECTED) in receipts
        elif exp.outcome == "delivered" and exp.sent.sender in WANTS_RECEIPTS:
            assert (exp.sent.sender, exp.sent.message_id, ReceiptType.DELIVERED) in receipts
