"""Where a signed series (an update or gradient cosine C(t)) changes sign (PAPER_MAP §5.8, W9).

With a sign-fixed backbone C(t) ∝ a(t+Δ) − a(t), so the change of sign marks the peak of the
backbone coordinate a(t); only this crossing is meaningful (the reference's "−v_b early / +v_b
late" is an SVD-sign artefact). Three readings of "the sign flip", each named for what it computes:

* `first_sign_change_step`   the label of the first point whose sign differs from the first
  non-zero sign (no interpolation; the analysis' `sign_flip_step`);
* `zero_crossings`           every crossing, linearly interpolated between bracketing points;
* `persistent_zero_crossing` the first interpolated crossing with ≥ `min_run` same-sign points
  on each side (ignores one-point blips; the diagnostics' `sign_flip_step`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def first_sign_change_step(steps: Sequence[float], values: Sequence[float]) -> int | None:
    """Step (label) of the first value whose sign differs from the first non-zero sign; None if never."""
    s = np.sign(np.asarray(values, dtype=np.float64))
    nz = np.nonzero(s)[0]
    if len(nz) == 0:
        return None
    first = s[nz[0]]
    for i in nz:
        if s[i] != first:
            return int(steps[i])
    return None


def zero_crossings(steps: Sequence[float], values: Sequence[float]) -> list[float]:
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


def persistent_zero_crossing(steps: Sequence[float], values: Sequence[float], min_run: int = 2) -> float | None:
    """The first interpolated zero crossing with at least `min_run` same-sign points on each side.

    None if there is no such crossing (zeros and NaNs are skipped).
    """
    pts = sorted((float(s), float(v)) for s, v in zip(steps, values) if not math.isnan(float(v)) and v != 0)
    for i in range(max(1, min_run), len(pts)):
        if (pts[i - 1][1] > 0) != (pts[i][1] > 0):
            before, after = pts[i - min_run: i], pts[i: i + min_run]
            if (len(after) == min_run
                    and all((p[1] > 0) == (pts[i - 1][1] > 0) for p in before)
                    and all((p[1] > 0) == (pts[i][1] > 0) for p in after)):
                (s0, v0), (s1, v1) = pts[i - 1], pts[i]
                return s0 + (s1 - s0) * v0 / (v0 - v1)
    return None
