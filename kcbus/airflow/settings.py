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

Expanded copies may hold credentials, so they are owner-only (0600 files in a 0700 folder) and
do not outlive their use: every use of a copy touches its folder, and whenever a new copy is
written, copies (and staging leftovers of crashed writers) unused for :data:`STALE_AFTER` are
deleted. A process reads a copy within moments of touching it, so nothing in use is deleted;
should a copy vanish anyway between lookup and read, :func:`load_config` writes it again.

Config location: ``KCBUS_CONFIG`` (a YAML file or folder), else ``$AIRFLOW_HOME/config``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from xoev import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kcbus.config import BusConfig

__all__ = [
    "CONFIG_ENV",
    "STALE_AFTER",
    "UnsetVariable",
    "config_path",
    "expanded_config",
    "load_config",
    "remove_stale_copies",
]

CONFIG_ENV = "KCBUS_CONFIG"
#: Seconds after its last use an expanded copy is deleted (when the next copy is written).
STALE_AFTER = 3600.0
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: What this module writes below ``.config/``: ``<digest>`` and ``.<digest>.<pid>.tmp``.
_COPY = re.compile(r"[0-9a-f]{16}")
_STAGING = re.compile(r"\.[0-9a-f]{16}\.[0-9]+\.tmp")


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
    try:
        os.utime(target)  # in use: keeps it from being removed as stale (see module docstring)
    except FileNotFoundError:
        _write_copy(target, expanded)
        remove_stale_copies(target.parent, keep=digest)
    except PermissionError:
        pass  # another user's copy (shared KCBUS_VAR): readable or not, its owner cleans it
    return target if source.is_dir() else target / source.name


def _write_copy(target: Path, expanded: Mapping[str, str]) -> None:
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
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
        _remove_copy(staging)


def remove_stale_copies(
    folder: Path,
    *,
    keep: str | None = None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> list[str]:
    """Delete the expanded copies in ``folder`` (``$KCBUS_VAR/.config``) not used for
    ``stale_after`` seconds, except ``keep``; returns the names deleted.

    Only entries this module writes are touched (``<digest>`` folders and ``.<digest>.<pid>.tmp``
    staging folders, never through a symlink); anything else in the folder stays."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name == keep or not (
            _COPY.fullmatch(entry.name) or _STAGING.fullmatch(entry.name)
        ):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # another process removed it meanwhile
        if not stat.S_ISDIR(info.st_mode) or now - info.st_mtime < stale_after:
            continue
        if _remove_copy(Path(entry.path)):
            removed.append(entry.name)
    return removed


def _remove_copy(folder: Path) -> bool:
    """Remove one copy folder (flat: regular files only); False if it is gone or not ours."""
    try:
        with os.scandir(folder) as entries:
            files = list(entries)
        if any(not f.is_file(follow_symlinks=False) for f in files):
            return False  # not a layout this module writes: leave it alone
        for file in files:
            Path(file.path).unlink(missing_ok=True)
        folder.rmdir()
    except FileNotFoundError:
        return False  # a concurrent cleaner was faster
    except OSError:
        return False  # e.g. a file appeared meanwhile (a writer still staging): try next time
    return True


def load_config(path: Path | None = None) -> BusConfig:
    """Load the route config (``KCBUS_CONFIG`` by default) with ``${VAR}`` expanded.

    Errors name the file the engineer edits, not the expanded copy (lines are the same)."""
    from kcbus._errors import ConfigError
    from kcbus.config import load

    source = path or config_path()
    for attempt in (1, 2):
        expanded = expanded_config(source)
        try:
            return load(expanded)
        except ConfigError as exc:
            if expanded == source:
                raise
            if attempt == 1 and not expanded.exists():
                # Removed as stale between lookup and read (unused for STALE_AFTER seconds and
                # back in use at that very moment): write it again, once.
                continue
            original = Path(exc.file)
            if original.parent == (expanded if expanded.is_dir() else expanded.parent):
                folder = source if source.is_dir() else source.parent
                original = folder / original.name
            raise ConfigError(original, exc.line, exc.field, exc.problem) from exc
    raise AssertionError("unreachable: the second attempt returns or raises")
