"""Statistics over seeds: the mean of a seed group and its 95 % t interval.

A seed group is the set of runs that differ only in `seed` (`grouping.seed_group_key`). Its
interval is Student's t interval over the seeds,

    mean ± t(0.975, n − 1) · s / √n,      s = sample standard deviation (ddof = 1),

which assumes the per-seed values are independent draws of a roughly normal quantity; with
n = 1 there is no interval ("one seed"), never a made-up one. The t quantiles are tabulated
(no scipy): exact to 3 decimals for 1..30 degrees of freedom and at 40, 60, 120, ∞, and
interpolated in 1/df in between (error < 2e-3 there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

INTERVAL_METHOD = "95 % t interval over seeds (mean ± t(0.975, n−1)·s/√n)"
ONE_SEED = "one seed"

# two-sided 95 % quantiles t(0.975, df) of Student's t distribution
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
_T975_INF = 1.960


def t_quantile_975(df: int) -> float:
    """t(0.975, df): the two-sided 95 % Student-t quantile for `df` ≥ 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    df = int(df)
    if df in _T975:
        return _T975[df]
    known = sorted(_T975) + [math.inf]
    hi = next(k for k in known if k > df)
    lo = max(k for k in known if k < df)
    t_lo, t_hi = _T975[lo], _T975.get(hi, _T975_INF)
    x, x_lo, x_hi = 1 / df, 1 / lo, (0.0 if math.isinf(hi) else 1 / hi)
    return t_hi + (t_lo - t_hi) * (x - x_hi) / (x_lo - x_hi)


@dataclass(frozen=True)
class SeedInterval:
    """Mean of n per-seed values and its 95 % t interval (lo, hi are NaN for n < 2)."""

    n: int
    mean: float
    lo: float
    hi: float

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.lo)

    def text(self, fmt=lambda v: f"{v:.4g}") -> str:
        """'71.2 [69.8, 72.6] (n=3)', '71.2 (one seed)', or 'n/a' without a value."""
        if self.n == 0:
            return "n/a"
        if not self.has_interval:
            return f"{fmt(self.mean)} ({ONE_SEED})"
        return f"{fmt(self.mean)} [{fmt(self.lo)}, {fmt(self.hi)}] (n={self.n})"


def seed_interval(values: Sequence[float]) -> SeedInterval:
    """The mean and 95 % t interval of the finite `values` (one per seed); NaN bounds for n = 1."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return SeedInterval(0, math.nan, math.nan, math.nan)
    mean = sum(vals) / n
    if n == 1:
        return SeedInterval(1, mean, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return SeedInterval(n, mean, mean - half, mean + half)


def effect_size(differences: Sequence[float]) -> float:
    """Paired effect size d_z = mean / sd of per-seed differences (NaN for n < 2 or sd = 0 with mean 0;
    ±inf when every seed shows the same non-zero difference)."""
    d = [float(x) for x in differences if math.isfinite(float(x))]
    if len(d) < 2:
        return math.nan
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    if sd == 0:
        return math.nan if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd
