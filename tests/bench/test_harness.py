"""The benchmark harness prints every figure beside its baseline with a ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import Figure, rate

ROOT = Path(__file__).resolve().parents[2]


def test_ratio_and_goal() -> None:
    fig = Figure("x", value=300.0, unit="msg/s", baseline="naive", baseline_value=100.0, goal=2.0)
    assert fig.ratio == 3.0
    assert fig.meets_goal is True
    slow = Figure("y", value=2.0, unit="s", baseline="b", baseline_value=1.0, goal=1.5,
                  goal_on="value", lower_is_better=True)
    assert slow.meets_goal is False


def test_rate_counts_calls() -> None:
    calls: list[int] = []
    assert rate(lambda: calls.append(1), min_seconds=0.03) > 0
    assert len(calls) >= 9


def test_json_output_of_unknown_filter_is_empty_object(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "-m", "bench", "--only", "no-such-benchmark", "--json", str(out)],
        cwd=ROOT, check=True,
    )
    assert json.loads(out.read_text()) == {}
