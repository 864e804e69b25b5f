"""kcbus benchmarks: ``python -m bench`` runs all of them.

Each module ``bench/bench_*.py`` exposes ``run(args) -> Iterable[Figure]``. Every figure is
printed beside a baseline measured in the same run, as a ratio: the machine is shared and
noisy, absolute times drift, ratios much less.
"""

from __future__ import annotations

from bench._harness import Figure, one_core, rate

__all__ = ["Figure", "one_core", "rate"]
