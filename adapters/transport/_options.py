"""Typed reading of transport options (keyword arguments and URL query parameters).

Options arrive as Python values (``connect(url, prefetch=50)``), as strings from a URL query
(``?prefetch=50``) or from an Airflow Connection's extras. :class:`Options` coerces each to the
declared type once, and refuses unknown names, so a typo in a Connection fails loudly at
``connect()`` instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from adapters.transport._errors import TransportConfigError

__all__ = ["Options", "merge_query"]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def merge_query(url: str, options: Mapping[str, object]) -> dict[str, object]:
    """URL query parameters, overridden by explicit keyword options."""
    merged: dict[str, object] = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    merged.update(options)
    return merged


class Options:
    """Takes declared options one by one; ``done()`` refuses whatever is left."""

    def __init__(self, transport: str, values: Mapping[str, object]) -> None:
        self._transport = transport
        self._values = dict(values)
        self._known: list[str] = []

    def _fail(self, name: str, problem: str) -> TransportConfigError:
        return TransportConfigError(f"option {name}: {problem}", transport=self._transport,
                                    option=name)

    def _raw(self, name: str) -> object:
        self._known.append(name)
        return self._values.pop(name, None)

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(name, "must be a string")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self._raw(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._fail(name, "must be a string")
        return value

    def path(self, name: str) -> Path | None:
        value = self._raw(name)
        if value is None or value == "":
            return None
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise self._fail(name, "must be a path")
        return Path(value)

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            result = default
        elif isinstance(value, bool):
            raise self._fail(name, "must be an integer")
        elif isinstance(value, int):
            result = value
        elif isinstance(value, str):
            try:
                result = int(value)
            except ValueError:
                raise self._fail(name, "must be an integer") from None
        else:
            raise self._fail(name, "must be an integer")
        if minimum is not None and result < minimum:
            raise self._fail(name, f"must be at least {minimum}")
        return result

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._raw(name)
        if value is None:
            result = default
        elif isinstance(value, bool):
            raise self._fail(name, "must be a number")
        elif isinstance(value, int | float):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                raise self._fail(name, "must be a number") from None
        else:
            raise self._fail(name, "must be a number")
        if minimum is not None and result < minimum:
            raise self._fail(name, f"must be at least {minimum}")
        return result

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise self._fail(name, "must be true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self._fail(name, f"must be one of {', '.join(choices)}")
        return value

    def function(self, name: str) -> Callable[..., object] | None:
        """A callable option (hooks such as ``sender_of``): only from Python, never a URL."""
        value = self._raw(name)
        if value is None:
            return None
        if not callable(value):
            raise self._fail(name, "must be a callable")
        return value

    def value(self, name: str, kind: type[T]) -> T | None:
        """An option that only makes sense from Python (a callable, an object)."""
        value = self._raw(name)
        if value is None:
            return None
        if not isinstance(value, kind):
            raise self._fail(name, f"must be a {kind.__name__}")
        return value

    def done(self) -> None:
        if self._values:
            unknown = ", ".join(sorted(self._values))
            known = ", ".join(sorted(set(self._known)))
            raise TransportConfigError(
                f"unknown option(s) {unknown} (known: {known})", transport=self._transport,
                option=sorted(self._values)[0],
            )
