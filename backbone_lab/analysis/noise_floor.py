"""The random-direction noise floor of a cosine in D dimensions (PAPER_MAP §5.8, §5.9).

For u uniform on the sphere in D dimensions and any fixed unit v, E|cos(u, v)| =
Γ(D/2) / (√π Γ((D+1)/2)) ≈ √(2/(πD)) (large D). Paper trunk (D = 25,165,824): 1.59e-4; one block
(D = 3,147,776): 4.50e-4. The paper text's "≈0.01" is inconsistent with these values.

One definition for the analysis (update alignment) and the diagnostics (gradient alignment).
"""

from __future__ import annotations

import math


def noise_floor(dim: int) -> float:
    """E|cos| of a random direction in `dim` dimensions, large-D form √(2/(πD)) (unitless)."""
    if dim <= 0:
        raise ValueError(f"noise_floor: dimension must be positive, got {dim}")
    return math.sqrt(2.0 / (math.pi * dim))


def noise_floor_exact(dim: int) -> float:
    """Exact E|cos| = Γ(D/2) / (√π Γ((D+1)/2)); equals `noise_floor(dim)` up to O(1/D)."""
    if dim <= 0:
        raise ValueError(f"noise_floor_exact: dimension must be positive, got {dim}")
    return math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)


def noise_floor_record(dim: int) -> dict:
    """The summary.json record: {mean_abs_cos: √(2/(πD)), inv_sqrt_d: 1/√D, dim: D}."""
    return {"mean_abs_cos": noise_floor(dim), "inv_sqrt_d": 1.0 / math.sqrt(dim), "dim": int(dim)}
