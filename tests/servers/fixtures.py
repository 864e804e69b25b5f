"""Fixtures that start real servers on localhost (filled in by the adapters work, issue 5)."""

from __future__ import annotations
