"""A typed reader over PyYAML's node graph, so every value keeps its file and line.

``yaml.safe_load`` forgets where a value came from; ``yaml.compose`` keeps a ``start_mark`` on
every node. :class:`Node` wraps one node with its dotted field path, and each accessor raises
:class:`~kcbus._errors.ConfigError` naming file, line (1-based) and field. Duplicate mapping
keys, which PyYAML would silently collapse to the last one, are an error here.

A problem text may quote the value it complains about; any URL in it is redacted
(:func:`~kcbus.config._redact.redact_urls`): endpoint values may hold credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import yaml

from kcbus._errors import ConfigError
from kcbus.config._redact import redact_urls

__all__ = ["Node", "compose_file"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def compose_file(path: Path) -> Node:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, "", "not UTF-8") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        problem = redact_urls(str(exc.problem))
        raise ConfigError(path, line, "", f"not valid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, "", "not valid YAML") from exc
    if node is None:
        raise ConfigError(path, 1, "", "empty file")
    return Node(node, path, "")


class Node:
    """One YAML node, its file, and its dotted field path (``partners.klinikum.profile``)."""

    def __init__(self, node: yaml.Node, file: Path, field: str) -> None:
        self._node = node
        self.file = file
        self.field = field

    @property
    def line(self) -> int:
        return int(self._node.start_mark.line) + 1

    def error(self, problem: str) -> ConfigError:
        return ConfigError(self.file, self.line, self.field, redact_urls(problem))

    def _child(self, node: yaml.Node, name: str) -> Node:
        field = f"{self.field}.{name}" if self.field else name
        return Node(node, self.file, field)

    # -- containers -------------------------------------------------------------------------

    def mapping(self, allowed: frozenset[str] | None = None) -> dict[str, Node]:
        if not isinstance(self._node, yaml.MappingNode):
            raise self.error("must be a mapping")
        out: dict[str, Node] = {}
        for key_node, value_node in self._node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise Node(key_node, self.file, self.field).error("keys must be plain names")
            key = str(key_node.value)
            if key in out:
                raise Node(key_node, self.file, self._child(key_node, key).field).error(
                    f"duplicate key (first on line {out[key].line})"
                )
            if allowed is not None and key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self._child(key_node, key).error(f"unknown field (allowed: {hint})")
            out[key] = self._child(value_node, key)
        return out

    def items(self) -> Iterator[Node]:
        if isinstance(self._node, yaml.ScalarNode) and self._node.tag.endswith(":null"):
            return
        if not isinstance(self._node, yaml.SequenceNode):
            raise self.error("must be a list")
        for index, item in enumerate(self._node.value):
            yield Node(item, self.file, f"{self.field}[{index}]")

    # -- scalars ----------------------------------------------------------------------------

    def _scalar(self) -> yaml.ScalarNode:
        if not isinstance(self._node, yaml.ScalarNode):
            raise self.error("must be a single value")
        return self._node

    def is_null(self) -> bool:
        return isinstance(self._node, yaml.ScalarNode) and self._node.tag.endswith(":null")

    def text(self, *, choices: tuple[str, ...] | None = None, pattern: str | None = None) -> str:
        node = self._scalar()
        if node.tag.endswith(":null"):
            raise self.error("must not be empty")
        value = str(node.value)
        if choices is not None and value not in choices:
            raise self.error(f"must be one of {', '.join(choices)} (got {value!r})")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.error(f"{value!r} does not match {pattern}")
        return value

    def nodes(self) -> list[Node]:
        """A list's items; a single value counts as a list of one."""
        if isinstance(self._node, yaml.ScalarNode) and not self.is_null():
            return [self]
        return list(self.items())

    def texts(self, *, pattern: str | None = None) -> tuple[str, ...]:
        return tuple(item.text(pattern=pattern) for item in self.nodes())

    def flag(self) -> bool:
        node = self._scalar()
        if not node.tag.endswith(":bool"):
            raise self.error(f"must be true or false (got {node.value!r})")
        return str(node.value).lower() in ("true", "yes", "on", "y")

    def integer(self, *, minimum: int | None = None, maximum: int | None = None) -> int:
        node = self._scalar()
        if not node.tag.endswith(":int"):
            raise self.error(f"must be a whole number (got {node.value!r})")
        digits = str(node.value).replace("_", "")
        try:
            value = int(digits, 0)
        except ValueError:  # YAML 1.1 also tags "0755" as int; read it as decimal
            value = int(digits, 10)
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(f"must be at most {maximum}")
        return value

    def number(self, *, minimum: float | None = None, maximum: float | None = None) -> float:
        node = self._scalar()
        if not (node.tag.endswith(":float") or node.tag.endswith(":int")):
            raise self.error(f"must be a number (got {node.value!r})")
        value = float(str(node.value).replace("_", ""))
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            raise self.error(f"must be at most {maximum:g}")
        return value

    def duration(self) -> timedelta:
        """``30s``, ``5m``, ``2h``, ``90d``, ``1w``; a bare number means seconds."""
        node = self._scalar()
        match = _DURATION.match(str(node.value))
        if match is None:
            raise self.error(f"must be a duration like 30s, 5m, 2h, 90d (got {node.value!r})")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])

    def path(self) -> Path:
        """A filesystem path; relative paths are relative to the config file's folder."""
        value = Path(self.text()).expanduser()
        return value if value.is_absolute() else (self.file.parent / value).resolve()
