"""Backbone–residual decomposition (paper §3.3 Def. 2, Eqs. 6–9; PAPER_MAP §5.3, W9).

θ(t) = θ(a) + a(t) v_b + r(t),  a(t) = <θ(t) − θ(a), v_b>,  r(t) ⟂ v_b,
f_b(t) = a(t)² / ‖θ(t) − θ(a)‖².

All quantities come from the drift Gram: with v_b = Xᵀc, a(t) = (G c)_t − (G c)_a and
‖r(t)‖² = K_tt − a(t)², K the Gram re-anchored at a. The sign of v_b is fixed so that
a(final) > 0 (the convention is recorded; PAPER_MAP W9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backbone_lab.analysis.gram import DriftGram

SIGN_CONVENTION = "a(final) > 0"


@dataclass
class Decomposition:
    """Per-step backbone decomposition (arrays aligned with ``steps``).

    Attributes:
        steps: (n,) int steps.
        a: (n,) signed backbone coordinate a(t) (parameter units).
        norm_r: (n,) ‖r(t)‖.
        norm_delta: (n,) ‖θ(t) − θ(anchor)‖.
        backbone_frac: (n,) f_b(t) = a²/‖Δθ‖² (0 where ‖Δθ‖ = 0).
        a_dot: (n,) (a(t) − a(t_prev)) / (t − t_prev), 0 for the first step (per optimizer step).
        r_dot: (n,) ‖r(t) − r(t_prev)‖ / (t − t_prev), 0 for the first step.
        coeffs: (T,) coefficients of the sign-fixed unit v_b over the Gram's rows.
        sign_flipped: whether the SVD sign was flipped to satisfy a(final) > 0.
        anchor_step: the anchor.
    """

    steps: np.ndarray
    a: np.ndarray
    norm_r: np.ndarray
    norm_delta: np.ndarray
    backbone_frac: np.ndarray
    a_dot: np.ndarray
    r_dot: np.ndarray
    coeffs: np.ndarray
    sign_flipped: bool
    anchor_step: int

    def summary(self, exclude_anchor: bool = True) -> dict:
        m = self.steps != self.anchor_step if exclude_anchor else np.ones_like(self.steps, bool)
        i_peak = int(np.argmax(self.a))
        return {
            "a_final": float(self.a[-1]),
            "norm_r_final": float(self.norm_r[-1]),
            "norm_delta_final": float(self.norm_delta[-1]),
            "backbone_frac_final": float(self.backbone_frac[-1]),
            "backbone_frac_mean": float(np.mean(self.backbone_frac[m])) if m.any() else None,
            "backbone_frac_mean_note": "mean of f_b over the steps after the anchor (paper's '68-72 %' figure)",
            "a_peak": float(self.a[i_peak]),
            "a_peak_step": int(self.steps[i_peak]),
            "sign_convention": SIGN_CONVENTION,
            "sign_flipped": self.sign_flipped,
        }


def fix_sign(gram: DriftGram, coeffs: np.ndarray, anchor_index: int, final_index: int) -> tuple[np.ndarray, bool]:
    """Return (±coeffs, flipped) so that <x_final − x_anchor, v> > 0 (ties: sum of projections > 0)."""
    p = gram.G @ coeffs
    a = p - p[anchor_index]
    s = a[final_index]
    if s == 0:
        s = float(np.sum(a))
    if s < 0:
        return -coeffs, True
    return coeffs, False


def decompose(
    gram: DriftGram,
    coeffs: np.ndarray,
    steps: Sequence[int],
    anchor_step: int,
    fix_sign_final: bool = True,
) -> Decomposition:
    """a(t), ‖r(t)‖, ‖Δθ_t‖, f_b(t), ȧ, ṙ for ``steps`` relative to ``anchor_step``.

    Args:
        gram: drift Gram over a superset of ``steps`` and ``anchor_step``.
        coeffs: (T,) coefficients of v_b (normalised here to unit length).
        steps: increasing steps to report (typically the anchor and all later analysed steps).
        anchor_step: θ(anchor) is subtracted (paper: θ(1) / θ(0)).
        fix_sign_final: enforce a(last of ``steps``) > 0 (PAPER_MAP W9).
    """
    idx = gram.indices(steps)
    ai = gram.index(anchor_step)
    c = np.asarray(coeffs, dtype=np.float64)
    nrm = gram.norm(c)
    if nrm <= 0:
        raise ValueError("backbone direction has zero norm")
    c = c / nrm
    flipped = False
    if fix_sign_final:
        c, flipped = fix_sign(gram, c, ai, idx[-1])
    p = gram.G @ c
    a = p[idx] - p[ai]
    G = gram.G
    k = G[idx, idx] - 2 * G[idx, ai] + G[ai, ai]
    norm_delta = np.sqrt(np.clip(k, 0, None))
    norm_r = np.sqrt(np.clip(k - a**2, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        fb = np.where(k > 0, a**2 / np.where(k > 0, k, 1), 0.0)
    st = np.asarray(steps, dtype=np.int64)
    a_dot = np.zeros(len(st))
    r_dot = np.zeros(len(st))
    if len(st) > 1:
        dt = np.diff(st).astype(float)
        da = np.diff(a)
        # ‖x_t − x_p‖² from the Gram, minus the backbone part (v unit)
        dd = G[idx[1:], idx[1:]] - 2 * G[idx[1:], idx[:-1]] + G[idx[:-1], idx[:-1]]
        a_dot[1:] = da / dt
        r_dot[1:] = np.sqrt(np.clip(dd - da**2, 0, None)) / dt
    return Decomposition(
        steps=st, a=a, norm_r=norm_r, norm_delta=norm_delta, backbone_frac=fb,
        a_dot=a_dot, r_dot=r_dot, coeffs=c, sign_flipped=flipped, anchor_step=int(anchor_step),
    )
