"""Alignment of a vector (gradient, update) with a reference direction (PAPER_MAP §5.8, §5.9).

Pure torch/numpy, no Lightning. All vectors are flat trunk vectors in the canonical order of
`backbone_lab.trunk.flatten`; dot products are taken in float64 so that cosines of order
1e-4 in D ~ 2.5e7 dimensions are not swamped by float32 summation error.

Definitions, for a vector g and a reference direction v (normalised here: v̂ = v/‖v‖):

* signed cosine       cos = ⟨g, v̂⟩ / ‖g‖
* parallel fraction   |⟨g, v̂⟩| / ‖g‖                     (= |cos|)
* perpendicular frac. ‖g − ⟨g, v̂⟩ v̂‖ / ‖g‖                (= √(1 − cos²))
* projection          ⟨g, v̂⟩ (signed, un-normalised; `update_alignment.py` in the reference)
* noise floor         E|cos| of a uniformly random direction in D dims ≈ √(2/(πD))
                      (`backbone_lab.analysis.noise_floor`, shared with the analysis)

Sign changes of a cosine series: `zero_crossings` (every crossing, interpolated) and
`persistent_zero_crossing` (the first with ≥ min_run same-sign points each side), both from
`backbone_lab.analysis.sign_changes`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from backbone_lab.analysis.noise_floor import noise_floor, noise_floor_exact  # noqa: F401  (one definition, re-exported)
from backbone_lab.analysis.sign_changes import persistent_zero_crossing, zero_crossings  # noqa: F401

_EPS = 1e-30


def _dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.reshape(-1).double(), b.reshape(-1).double()))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Signed cosine of two flat vectors (0.0 if either is zero)."""
    na, nb = math.sqrt(_dot64(a, a)), math.sqrt(_dot64(b, b))
    if na < _EPS or nb < _EPS:
        return 0.0
    return _dot64(a, b) / (na * nb)


def alignment_stats(g: torch.Tensor, v: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Alignment of `g` with direction `v` (any norm), both flat (D,).

    Returns {prefix+key: value} for keys `cos`, `abs_cos`, `par_frac`, `perp_frac`, `proj`,
    `norm` (‖g‖). A zero `g` gives cos = 0, perp_frac = 1 (NaN would poison plots).
    """
    if g.numel() != v.numel():
        raise ValueError(f"alignment_stats: g has {g.numel()} entries, v has {v.numel()}")
    gg, vv, gv = _dot64(g, g), _dot64(v, v), _dot64(g, v)
    ng, nv = math.sqrt(gg), math.sqrt(vv)
    if nv < _EPS:
        raise ValueError("alignment_stats: reference direction is zero")
    proj = gv / nv
    cos = proj / ng if ng >= _EPS else 0.0
    cos = max(-1.0, min(1.0, cos))
    out = {
        "cos": cos,
        "abs_cos": abs(cos),
        "par_frac": abs(cos),
        "perp_frac": math.sqrt(max(0.0, 1.0 - cos * cos)),
        "proj": proj,
        "norm": ng,
    }
    return {prefix + k: v for k, v in out.items()}


def monte_carlo_abs_cos(D: int, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(mean, standard error) of |cos| between a fixed unit vector and n Gaussian vectors in D dims."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D))
    c = np.abs(x[:, 0]) / np.linalg.norm(x, axis=1)  # by symmetry, v = e_1
    return float(c.mean()), float(c.std(ddof=1) / math.sqrt(n))
