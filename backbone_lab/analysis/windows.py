"""Window geometry and matched-validation-loss comparison across runs (paper §5.2 Table 5; PAPER_MAP §5.13).

For a list of checkpoint steps [s_0, …, s_n]: anchor at s_0, drift rows θ(s_i) − θ(s_0),
row-normalise, uncentered PCA → PC1 %, k95, k99; window drift ‖θ(s_n) − θ(s_0)‖; PC1 stability
inside the window = |cos| between PC1s of consecutive sub-windows of ``sub_window`` rows (rows
measured from s_0, stride 1). Each run contributes its own drift Gram (one streamed pass per run).

Matched step: the evaluation step of run A whose val loss is closest to a target (e.g. the final
val loss of the SGD+momentum control).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backbone_lab.analysis.gram import DriftGram, coeff_rows
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.rolling import rolling_backbones


def window_geometry(gram: DriftGram, window_steps: Sequence[int], sub_window: int = 5, row_normalise: bool = True) -> dict:
    """PC1 %, k95, k99, drift and sub-window PC1 stability of one checkpoint window.

    Args:
        gram: drift Gram containing all ``window_steps``.
        window_steps: increasing steps, the first is the anchor (≥ 2 steps).
        sub_window: rows per stability sub-window (skipped when the window has fewer rows + 1).
    """
    st = [int(s) for s in window_steps]
    if len(st) < 2:
        raise ValueError("a window needs at least 2 steps (anchor + 1 row)")
    T = len(gram.steps)
    ai = gram.index(st[0])
    ri = gram.indices(st[1:])
    rp = pca_rows(gram, coeff_rows(T, ri, ai), row_normalise=row_normalise, n_dirs=1)
    li = gram.index(st[-1])
    drift = float(np.sqrt(max(gram.G[li, li] - 2 * gram.G[li, ai] + gram.G[ai, ai], 0.0)))
    out = {
        "steps": st,
        "anchor_step": st[0],
        "n_rows": len(st) - 1,
        "normalisation": "rownorm" if row_normalise else "raw",
        "pc1_pct": 100 * rp.pca.pc1,
        "k95": rp.pca.k95,
        "k99": rp.pca.k99,
        "drift": drift,
        "subset": gram.subset,
    }
    if len(st) - 1 >= sub_window + 1:
        rr = rolling_backbones(gram, st[1:], window=sub_window, reanchor=False, row_normalise=row_normalise, anchor_step=st[0])
        out["sub_window"] = sub_window
        out["stability_mean"] = float(np.mean(rr.rho))
        out["stability_min"] = float(np.min(rr.rho))
    return out


def window_backbone(gram: DriftGram, window_steps: Sequence[int], row_normalise: bool = True) -> np.ndarray:
    """Unit PC1 of a window (anchor = first step), sign-fixed so the last row projects positively.

    Coefficients over ``gram``'s rows; feed to ``update_alignment`` for PAPER_MAP §5.8 variant 3
    (e.g. the SGD-control window [600, 2000] evaluated at t ∈ {1000, 1600, 2200, 3000, 3800}).
    """
    st = [int(s) for s in window_steps]
    T = len(gram.steps)
    ai = gram.index(st[0])
    c = pca_rows(gram, coeff_rows(T, gram.indices(st[1:]), ai), row_normalise=row_normalise, n_dirs=1).v1
    p = gram.G @ c
    return -c if p[gram.index(st[-1])] - p[ai] < 0 else c


def matched_step(eval_steps: Sequence[int], val_loss: Sequence[float], target: float, candidates: Sequence[int] | None = None) -> int:
    """Eval step whose val loss is closest to ``target`` (restricted to ``candidates`` if given)."""
    st = np.asarray(eval_steps)
    vl = np.asarray(val_loss, dtype=np.float64)
    ok = np.isfinite(vl)
    if candidates is not None:
        ok &= np.isin(st, np.asarray(candidates))
    if not ok.any():
        raise ValueError("no finite val loss among the candidate steps")
    i = np.nonzero(ok)[0][np.argmin(np.abs(vl[ok] - target))]
    return int(st[i])

