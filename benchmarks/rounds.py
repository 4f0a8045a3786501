"""Interleaved benchmark rounds and their summary.

Variants are measured A, B, C, A, B, C, ... (never all of A first): a machine that slows down
or speeds up during the benchmark (other load, clocks, caches) then touches every variant
alike. Each variant is summarised by the median over rounds and its spread (min–max); a
difference between two variants smaller than their spreads is noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Spread:
    """Median and range of one quantity over rounds."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def format(self, fmt: str = "{:,.1f}") -> str:
        return f"{fmt.format(self.median)} [{fmt.format(self.lo)}–{fmt.format(self.hi)}]"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}


def interleaved(variants: Mapping[str, Callable[[], Any]], rounds: int,
                progress: Callable[[int, str, Any], None] | None = None) -> dict[str, list[Any]]:
    """Call every variant once per round, in the given order, `rounds` times.

    Returns `name -> [result of round 1, round 2, ...]`; `progress(round, name, result)` is
    called after each measurement (for a progress line)."""
    results: dict[str, list[Any]] = {name: [] for name in variants}
    for r in range(1, rounds + 1):
        for name, measure in variants.items():
            result = measure()
            results[name].append(result)
            if progress is not None:
                progress(r, name, result)
    return results
