"""The ``kcbus`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; a command's
handler returns the exit code. Groups from higher layers (the Airflow-driven ``demo``) plug in
through the ``kcbus.commands`` entry point group, so this package never imports upward.
Exit codes everywhere: 0 success, 1 rejected/invalid input, 2 usage or configuration error.
Errors are one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from xoev import ConfigurationError, KcbusError

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

# Modules that add sub-commands; each has register(subparsers). Order = order in --help.
_COMMAND_MODULES = (
    "kcbus.cli.xml_commands",  # validate, inspect, schemas
    "kcbus.cli.key_commands",  # keys, seal, open
    "kcbus.cli.ledger_commands",  # ledger, resend
)
_PLUGIN_GROUP = "kcbus.commands"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's default exits 2 after printing usage; keep the code, make it one line.
        sys.stderr.write(f"kcbus: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kcbus", description="kcbus integration bus")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # group not built yet
                continue
            raise
        module.register(subparsers)
    for entry_point in sorted(entry_points(group=_PLUGIN_GROUP), key=lambda ep: ep.name):
        entry_point.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigurationError as exc:
        sys.stderr.write(f"kcbus: {exc}\n")
        return EXIT_USAGE
    except KcbusError as exc:
        sys.stderr.write(f"kcbus: {exc}\n")
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
