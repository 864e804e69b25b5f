"""The demo flows as a test scenario: the repository's demo config with other transports.

:func:`make_config` rewrites ``config/*.yaml`` (the demo's partners and routes) for a test:
the embedded default's kombu folder broker and drop folders become the in-memory twin
(``memory://<name>``) or real servers, and the ledger goes where the test says. The partners,
routes, schemas and traffic stay the demo's, so the tests run the same flows a user sees.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.envelope import Keystore
from kcbus.config import BusConfig

__all__ = ["PASSPHRASE", "Keys", "Scenario", "make_config", "make_keys", "memory_endpoints"]

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
    from kcbus.airflow.demo.world import DemoWorld
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


@dataclass
class Scenario:
    """One test's bus: config folder, ledger URL, the demo partners."""

    config_dir: Path
    config: BusConfig
    ledger_url: str
    root: Path

    @staticmethod
    def unique() -> str:
        return f"t{uuid.uuid4().hex[:10]}"


def partner_keys(keys: Path) -> Path:
    return keys / "partners"


def bus_keystore(keys: Path) -> Keystore:
    return Keystore(keys / "kcbus", PASSPHRASE)
