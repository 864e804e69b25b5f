"""Shared measuring helpers for the benchmarks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its baseline from the same run.

    ``ratio`` is value / baseline_value: for rates (higher is better) a ratio ≥ 1 beats the
    baseline; for a figure whose baseline is a limit (e.g. bare crypto), the ratio says how
    close we get to it. ``goal`` is the ratio or value the issue asks for, if any, and
    ``goal_on`` says which of the two it applies to.
    """

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    goal: float | None = None
    goal_on: str = "ratio"  # "ratio" or "value"
    lower_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("inf")

    @property
    def meets_goal(self) -> bool | None:
        if self.goal is None:
            return None
        measured = self.ratio if self.goal_on == "ratio" else self.value
        return measured <= self.goal if self.lower_is_better else measured >= self.goal


@contextmanager
def one_core() -> Iterator[None]:
    """Pin the process to one core while measuring (the issues state figures per core)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def rate(fn: Callable[[], object], *, min_seconds: float = 1.0, min_calls: int = 3) -> float:
    """Calls per second of ``fn``: repeats until both minimums are reached, best of 3 rounds."""
    best = 0.0
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        elapsed = 0.0
        while calls < min_calls or elapsed < min_seconds / 3:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
        best = max(best, calls / elapsed)
    return best
