"""The kcbus command line as a user meets it: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

from kcbus.cli import EXIT_USAGE, main


def test_help_lists_commands_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kcbus", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "usage: kcbus" in result.stdout


def test_unknown_command_is_one_line_usage_error(capsys: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kcbus", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_missing_command_is_usage_error() -> None:
    try:
        main([])
    except SystemExit as exc:
        assert exc.code == EXIT_USAGE
    else:  # pragma: no cover - argparse must refuse
        raise AssertionError("kcbus without a command must fail")
