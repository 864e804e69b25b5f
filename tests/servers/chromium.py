"""Where the headless browser for UI tests lives (Debian ``chromium`` + ``chromium-driver``).

Nothing is started here: a UI test starts chromedriver/Chromium itself. The check runs
``chromium --version`` once, so a broken install fails the test with the reason.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.servers._process import ServerStartError, need_executable

__all__ = ["Chromium", "find_chromium"]


@dataclass(frozen=True)
class Chromium:
    binary: Path
    driver: Path
    version: str
    #: Flags a headless run as root in a container needs (no user namespaces for the sandbox).
    flags: tuple[str, ...] = ("--headless=new", "--no-sandbox", "--disable-gpu",
                              "--disable-dev-shm-usage")


def find_chromium(binary: Path = Path("/usr/bin/chromium"),
                  driver: Path = Path("/usr/bin/chromedriver")) -> Chromium:
    need_executable(binary, "chromium")
    need_executable(driver, "chromium-driver")
    result = subprocess.run([str(binary), "--version"], capture_output=True, timeout=60,
                            check=False)
    version = result.stdout.decode(errors="replace").strip().splitlines()
    if result.returncode != 0 or not version:
        raise ServerStartError(f"{binary} --version failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace').strip()[-300:]}")
    return Chromium(binary=binary, driver=driver, version=version[-1])
