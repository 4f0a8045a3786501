"""Rolling-window backbones and adjacent-window alignment (paper §4.2; PAPER_MAP §5.4, §5.2 c(w)).

Default (PAPER_MAP §5.4, paper ρ(t)): windows of W consecutive analysed checkpoints, stride 1;
inside a window re-anchor at its first checkpoint (W−1 drift rows), row-normalise, uncentered
PCA, v_roll(w) = PC1; ρ(w) = |<v_roll(w), v_roll(w+1)>|.

Variant c(w) (PAPER_MAP §5.2, the "≈0.997" statement): windows of W drift rows measured from the
global anchor (not re-anchored), raw (not row-normalised); |cos| between consecutive windows
and |<v_roll(w), v_b>| with the global backbone.

Cross-window inner products need no D-vectors: both directions are coefficient vectors over the
same drift Gram, so <v(w), v(w')> = c_wᵀ G c_w'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backbone_lab.analysis.gram import DriftGram, coeff_rows
from backbone_lab.analysis.pca import pca_rows


@dataclass
class RollingResult:
    """Rolling-window backbones.

    Attributes:
        start, end: (nw,) first/last step of each window.
        centre: (nw,) (start + end) / 2.
        pc1: (nw,) window PC1 explained fraction.
        coeffs: (nw, T) unit v_roll(w) as coefficients over the Gram rows.
        rho: (nw − 1,) |<v_roll(w), v_roll(w+1)>|.
        rho_step: (nw − 1,) mean of the two window centres.
        window, stride, reanchor, row_normalise: parameters used.
    """

    start: np.ndarray
    end: np.ndarray
    centre: np.ndarray
    pc1: np.ndarray
    coeffs: np.ndarray
    rho: np.ndarray
    rho_step: np.ndarray
    window: int
    stride: int
    reanchor: bool
    row_normalise: bool

    def alignment_with(self, gram: DriftGram, c: np.ndarray) -> np.ndarray:
        """(nw,) |<v_roll(w), v>| for a unit direction v = Xᵀc."""
        return np.abs(self.coeffs @ gram.G @ c)

    def summary(self) -> dict:
        if len(self.rho) == 0:
            return {"n_windows": int(len(self.start)), "rho_mean": None, "rho_max": None, "rho_min": None, "rho_argmin_step": None,
                    "window": self.window, "stride": self.stride, "reanchor": self.reanchor, "row_normalise": self.row_normalise}
        i = int(np.argmin(self.rho))
        return {
            "n_windows": int(len(self.start)),
            "rho_mean": float(np.mean(self.rho)),
            "rho_max": float(np.max(self.rho)),
            "rho_min": float(self.rho[i]),
            "rho_argmin_step": float(self.rho_step[i]),
            "window_pc1_mean_pct": 100 * float(np.mean(self.pc1)),
            "window": self.window,
            "stride": self.stride,
            "reanchor": self.reanchor,
            "row_normalise": self.row_normalise,
        }


def rolling_backbones(
    gram: DriftGram,
    steps: Sequence[int],
    window: int = 10,
    stride: int = 1,
    reanchor: bool = True,
    row_normalise: bool = True,
    anchor_step: int | None = None,
) -> RollingResult:
    """Rolling-window PC1 directions over the analysed ``steps`` (in time order).

    Args:
        steps: analysed checkpoints (paper: 200..10000, the global anchor excluded).
        window: W checkpoints per window (paper 10); with ``reanchor`` a window has W−1 drift rows,
            without it W rows measured from ``anchor_step``.
        reanchor: re-anchor each window at its first checkpoint (PAPER_MAP §5.4) or measure from the
            global anchor (PAPER_MAP §5.2 c(w) variant; needs ``anchor_step``).
    """
    idx = gram.indices(steps)
    st = np.asarray(steps, dtype=np.int64)
    T = len(gram.steps)
    if not reanchor and anchor_step is None:
        raise ValueError("rolling_backbones(reanchor=False) needs anchor_step")
    starts = list(range(0, len(idx) - window + 1, stride))
    if not starts:
        raise ValueError(f"rolling window W={window} longer than the {len(idx)} analysed steps")
    coeffs, pc1, s0, s1 = [], [], [], []
    for w in starts:
        wi = idx[w: w + window]
        if reanchor:
            C = coeff_rows(T, wi[1:], wi[0])
        else:
            C = coeff_rows(T, wi, gram.index(anchor_step))
        rp = pca_rows(gram, C, row_normalise=row_normalise, n_dirs=1)
        c = rp.dirs[:, 0]
        # deterministic sign (irrelevant for |<.,.>|): positive projection of the window's last row
        if (gram.G @ c)[wi[-1]] - (gram.G @ c)[wi[0] if reanchor else gram.index(anchor_step)] < 0:
            c = -c
        coeffs.append(c)
        pc1.append(rp.pca.explained[0])
        s0.append(st[w])
        s1.append(st[w + window - 1])
    coeffs = np.array(coeffs)
    start, end = np.array(s0), np.array(s1)
    centre = (start + end) / 2.0
    M = coeffs @ gram.G @ coeffs.T
    rho = np.abs(np.diag(M, 1))
    return RollingResult(
        start=start, end=end, centre=centre, pc1=np.array(pc1), coeffs=coeffs, rho=rho,
        rho_step=(centre[:-1] + centre[1:]) / 2.0, window=window, stride=stride,
        reanchor=reanchor, row_normalise=row_normalise,
    )


def per_block_cw(
    grams: dict[str, DriftGram],
    steps: Sequence[int],
    anchor_step: int,
    backbones: dict[str, np.ndarray] | None = None,
    window: int = 10,
    stride: int = 1,
) -> dict[str, dict]:
    """PAPER_MAP §5.2 c(w) per block: raw, not re-anchored windows from the global anchor.

    Returns per block: consecutive-window |cos| (mean/min/max) and, when ``backbones`` (unit
    coefficient vectors per block) are given, |<v_roll(w), v_b>| statistics.
    """
    out = {}
    for name, g in grams.items():
        rr = rolling_backbones(g, steps, window=window, stride=stride, reanchor=False, row_normalise=False, anchor_step=anchor_step)
        d = {
            "consecutive_abs_cos_mean": float(np.mean(rr.rho)) if len(rr.rho) else None,
            "consecutive_abs_cos_min": float(np.min(rr.rho)) if len(rr.rho) else None,
            "consecutive_abs_cos_max": float(np.max(rr.rho)) if len(rr.rho) else None,
        }
        if backbones is not None and name in backbones:
            cw = rr.alignment_with(g, backbones[name])
            d.update({"cw_vs_global_mean": float(np.mean(cw)), "cw_vs_global_min": float(np.min(cw)), "cw_vs_global_max": float(np.max(cw))})
        out[name] = d
    return out
