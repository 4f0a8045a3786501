"""Interleaved benchmark rounds and their summary.

Variants are measured A, B, C, A, B, C, ... (never all of A first): a machine that slows down
or speeds up during the benchmark (other load, clocks, caches) then touches every variant
alike. Each variant is summarised by the median over rounds and its spread (min–max); a
difference between two variants smaller than their spreads is noise.

With `record_failures=True`, a variant that raises (out of memory, a missing compiler for
torch.compile, ...) is recorded as a `Failed` entry at the end of its list and is not called
again; the other variants go on. Without it the error propagates (callers that do not handle
`Failed` entries).
"""

from __future__ import annotations

import statistics
import traceback
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


@dataclass(frozen=True)
class Failed:
    """The error that ended a variant: `ExceptionType: message` (first line), the round it
    happened in (1-based) and the last lines of its traceback."""

    error: str
    round: int
    traceback: str = ""

    @classmethod
    def of(cls, err: BaseException, round_: int) -> "Failed":
        first = (str(err).strip().splitlines() or [""])[0][:500]
        tail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])[-2000:]
        return cls(f"{type(err).__name__}: {first}".rstrip(": "), round_, tail)


def succeeded(results: list[Any]) -> list[Any]:
    """The measurements of one variant, without its `Failed` entry."""
    return [r for r in results if not isinstance(r, Failed)]


def failure(results: list[Any]) -> Failed | None:
    """The `Failed` entry of one variant, if it failed."""
    return next((r for r in results if isinstance(r, Failed)), None)


def interleaved(variants: Mapping[str, Callable[[], Any]], rounds: int,
                progress: Callable[[int, str, Any], None] | None = None,
                record_failures: bool = False) -> dict[str, list[Any]]:
    """Call every variant once per round, in the given order, `rounds` times.

    Returns `name -> [result of round 1, round 2, ...]`; with `record_failures`, a variant that
    raised an `Exception` ends with a `Failed` entry and is skipped in the later rounds
    (KeyboardInterrupt and SystemExit still stop everything). `progress(round, name, result or Failed)` is called
    after each measurement (for a progress line, or to save what has been measured so far)."""
    results: dict[str, list[Any]] = {name: [] for name in variants}
    for r in range(1, rounds + 1):
        for name, measure in variants.items():
            if failure(results[name]) is not None:
                continue
            try:
                result = measure()
            except Exception as err:  # noqa: BLE001 - one variant's failure must not lose the others
                if not record_failures:
                    raise
                result = Failed.of(err, r)
            results[name].append(result)
            if progress is not None:
                progress(r, name, result)
    return results
