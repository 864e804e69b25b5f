"""Run every benchmark: ``python -m bench [--only NAME] [--json FILE] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench
from bench._harness import Figure


def _modules(only: list[str]) -> list[str]:
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
        if m.name.startswith("bench_")
    )
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def _line(fig: Figure) -> str:
    goal = ""
    if fig.goal is not None:
        mark = "ok" if fig.meets_goal else "BELOW GOAL"
        goal = f"  goal {'ratio' if fig.goal_on == 'ratio' else 'value'} {fig.goal:g}: {mark}"
    return (
        f"{fig.name:<48} {fig.value:>12,.1f} {fig.unit:<10} "
        f"baseline {fig.baseline}: {fig.baseline_value:,.1f}  ratio {fig.ratio:.2f}{goal}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run modules matching NAME")
    parser.add_argument(
        "--json", metavar="FILE", help="also write all figures as JSON ('-' = stdout)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    failed = False
    for name in _modules(args.only):
        module = importlib.import_module(f"bench.{name}")
        try:
            figures = list(module.run(args))
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
            continue
        for fig in figures:
            print(_line(fig), flush=True)
            results[fig.name] = {
                "value": fig.value,
                "unit": fig.unit,
                "baseline": fig.baseline,
                "baseline_value": fig.baseline_value,
                "ratio": fig.ratio,
            }
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
