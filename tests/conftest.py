"""Shared test configuration.

Real servers (RabbitMQ, OpenSSH, PostgreSQL, HTTPS, Chromium) are started on localhost by the
fixtures in tests/servers/ and stopped afterwards by PID.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.fixtures"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Resolved: the schema registry works with real paths, and shared/ may be a symlink.
STANDARDS = (PROJECT_ROOT.parent / "shared" / "standards").resolve()


@pytest.fixture(scope="session")
def standards() -> Path:
    """The official schema packages (../shared/standards), read in place, never copied."""
    if not STANDARDS.is_dir():
        pytest.fail(f"official schema corpus not found at {STANDARDS}")
    return STANDARDS
