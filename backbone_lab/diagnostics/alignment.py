"""Alignment of a vector (gradient, update) with a reference direction (SPEC §5.8, §5.9).

Pure torch/numpy, no Lightning. All vectors are flat trunk vectors in the canonical order of
`backbone_lab.trunk.flatten`; dot products are taken in float64 so that cosines of order
1e-4 in D ~ 2.5e7 dimensions are not swamped by float32 summation error.

Definitions, for a vector g and a reference direction v (normalised here: v̂ = v/‖v‖):

* signed cosine       cos = ⟨g, v̂⟩ / ‖g‖
* parallel fraction   |⟨g, v̂⟩| / ‖g‖                     (= |cos|)
* perpendicular frac. ‖g − ⟨g, v̂⟩ v̂‖ / ‖g‖                (= √(1 − cos²))
* projection          ⟨g, v̂⟩ (signed, un-normalised; `update_alignment.py` in the reference)
* noise floor         E|cos| of a uniformly random direction in D dims ≈ √(2/(πD))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

_EPS = 1e-30


def noise_floor(D: int) -> float:
    """Analytic E|cos(u, v)| for u uniform on the sphere in D dimensions, large-D form √(2/(πD)).

    Trunk of the paper model (D = 25,165,824): 1.59e-4; one block (D = 3,147,776): 4.50e-4.
    """
    if D <= 0:
        raise ValueError(f"noise_floor: dimension must be positive, got {D}")
    return math.sqrt(2.0 / (math.pi * D))


def noise_floor_exact(D: int) -> float:
    """Exact E|cos| = Γ(D/2) / (√π Γ((D+1)/2)); equals `noise_floor(D)` up to O(1/D)."""
    if D <= 0:
        raise ValueError(f"noise_floor_exact: dimension must be positive, got {D}")
    return math.exp(math.lgamma(D / 2) - math.lgamma((D + 1) / 2)) / math.sqrt(math.pi)


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


def perpendicular_fraction_direct(g: torch.Tensor, v: torch.Tensor) -> float:
    """‖g − ⟨g, v̂⟩v̂‖/‖g‖ computed explicitly (a D-vector; for tests of the closed form)."""
    g64, v64 = g.reshape(-1).double(), v.reshape(-1).double()
    vh = v64 / v64.norm()
    r = g64 - torch.dot(g64, vh) * vh
    return float(r.norm() / g64.norm())


def sign_flips(steps: Sequence[float], values: Sequence[float]) -> list[float]:
    """Zero crossings of a signed series, linearly interpolated between the bracketing points.

    Exact zeros are skipped (a crossing is between a strictly positive and a strictly negative
    value, possibly with zeros between them). NaNs are ignored.
    """
    pts = [(float(s), float(v)) for s, v in zip(steps, values) if not math.isnan(float(v))]
    pts.sort()
    out, prev = [], None
    for s, v in pts:
        if v == 0.0:
            continue
        if prev is not None and (prev[1] > 0) != (v > 0):
            s0, v0 = prev
            out.append(s0 + (s - s0) * v0 / (v0 - v))
        prev = (s, v)
    return out


def dominant_sign_flip(
    steps: Sequence[float], values: Sequence[float], min_run: int = 2
) -> float | None:
    """The first zero crossing with at least `min_run` same-sign points on each side.

    With a sign-fixed backbone the update cosine C(t) ∝ a(t+Δ) − a(t), so this crossing marks the
    peak of the backbone coordinate a(t) (SPEC §5.8); `min_run` ignores single-point blips.
    None if there is no such crossing (zeros and NaNs are skipped).
    """
    pts = sorted((float(s), float(v)) for s, v in zip(steps, values) if not math.isnan(float(v)) and v != 0)
    for i in range(max(1, min_run), len(pts)):
        if (pts[i - 1][1] > 0) != (pts[i][1] > 0):
            before, after = pts[i - min_run : i], pts[i : i + min_run]
            if (len(after) == min_run
                    and all((p[1] > 0) == (pts[i - 1][1] > 0) for p in before)
                    and all((p[1] > 0) == (pts[i][1] > 0) for p in after)):
                (s0, v0), (s1, v1) = pts[i - 1], pts[i]
                return s0 + (s1 - s0) * v0 / (v0 - v1)
    return None


def monte_carlo_abs_cos(D: int, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(mean, standard error) of |cos| between a fixed unit vector and n Gaussian vectors in D dims."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D))
    c = np.abs(x[:, 0]) / np.linalg.norm(x, axis=1)  # by symmetry, v = e_1
    return float(c.mean()), float(c.std(ddof=1) / math.sqrt(n))
