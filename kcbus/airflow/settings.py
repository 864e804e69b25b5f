"""Where kcbus's Airflow side finds its route config, and ``${VAR}`` expansion in it.

The route config (``kcbus.config``) names concrete endpoints: drop folders, broker folders,
schema folders — absolute paths that differ per machine. Config files may therefore write
``${NAME}`` for environment variables; :func:`load_config` expands them before
:func:`kcbus.config.load` reads the files (which keeps every error's file and line: the
expanded copy has the same lines). Two variables have defaults:

* ``KCBUS_HOME`` — the folder above the config folder (the repository for ``config/``);
* ``KCBUS_VAR`` — ``$KCBUS_HOME/var/demo``, the embedded default's state folder.

Any other unset variable is a :class:`UnsetVariable` naming file, line and variable. The
expanded copy is written once per distinct content under ``$KCBUS_VAR/.config/<digest>/``, so
every DAG parse and every task of one config reads the same files. A config that uses
``${...}`` must write its paths absolute (``${KCBUS_HOME}/schemas/...``): relative paths would
be read relative to the copy.

Config location: ``KCBUS_CONFIG`` (a YAML file or folder), else ``$AIRFLOW_HOME/config``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from xoev import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kcbus.config import BusConfig

__all__ = ["CONFIG_ENV", "UnsetVariable", "config_path", "expanded_config", "load_config"]

CONFIG_ENV = "KCBUS_CONFIG"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UnsetVariable(ConfigurationError):
    """A ``${NAME}`` in the route config names an environment variable that is not set."""

    def __init__(self, file: Path, line: int, name: str) -> None:
        super().__init__(f"{file}:{line}: ${{{name}}} is not set")
        self.file = str(file)
        self.line = line
        self.name = name


def config_path() -> Path:
    given = os.environ.get(CONFIG_ENV)
    if given:
        return Path(given)
    return Path(os.environ.get("AIRFLOW_HOME", ".")) / "config"


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted([*source.glob("*.yaml"), *source.glob("*.yml")])
    return [source]


def _variables(source: Path) -> dict[str, str]:
    folder = source if source.is_dir() else source.parent
    home = os.environ.get("KCBUS_HOME") or str(folder.resolve().parent)
    return {
        **os.environ,
        "KCBUS_HOME": home,
        "KCBUS_VAR": os.environ.get("KCBUS_VAR") or str(Path(home) / "var" / "demo"),
    }


def _expand(file: Path, text: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = variables.get(name)
        if value is None or "\n" in value:  # a newline would shift every later line number
            line = text.count("\n", 0, match.start()) + 1
            raise UnsetVariable(file, line, name)
        return value

    return _VARIABLE.sub(replace, text)


def expanded_config(source: Path) -> Path:
    """``source`` itself if it uses no ``${...}``, else its expanded copy (created once)."""
    files = _files(source)
    texts = {}
    for file in files:
        try:
            texts[file] = file.read_text(encoding="utf-8")
        except OSError:
            return source  # kcbus.config.load reports the unreadable file with its name
    if not any(_VARIABLE.search(text) for text in texts.values()):
        return source
    variables = _variables(source)
    expanded = {file.name: _expand(file, text, variables) for file, text in texts.items()}
    digest = hashlib.sha256(
        repr(sorted(expanded.items())).encode("utf-8", "surrogateescape")
    ).hexdigest()[:16]
    target = Path(variables["KCBUS_VAR"]) / ".config" / digest
    if not target.is_dir():
        staging = target.with_name(f".{digest}.{os.getpid()}.tmp")
        # Expanded ${VAR}s may be credentials: the copy is readable by its owner only.
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir(mode=0o700, exist_ok=True)
        for name, text in expanded.items():
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        try:
            staging.rename(target)  # atomic: concurrent parsers see all files or none
        except OSError:
            if not target.is_dir():
                raise
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    return target if source.is_dir() else target / source.name


def load_config(path: Path | None = None) -> BusConfig:
    """Load the route config (``KCBUS_CONFIG`` by default) with ``${VAR}`` expanded.

    Errors name the file the engineer edits, not the expanded copy (lines are the same)."""
    from kcbus._errors import ConfigError
    from kcbus.config import load

    source = path or config_path()
    expanded = expanded_config(source)
    try:
        return load(expanded)
    except ConfigError as exc:
        if expanded == source:
            raise
        original = Path(exc.file)
        if original.parent == (expanded if expanded.is_dir() else expanded.parent):
            folder = source if source.is_dir() else source.parent
            original = folder / original.name
        raise ConfigError(original, exc.line, exc.field, exc.problem) from exc
