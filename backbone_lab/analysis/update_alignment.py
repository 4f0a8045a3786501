"""Update–backbone alignment (paper §4.8, §6.3, §10.3; SPEC §5.8).

For updates u = θ(s) − θ(s') between stored checkpoints and a unit backbone v = Xᵀc:
signed C = <u, v>/‖u‖ and |C|, all from the drift Gram (<u, v> = (G c)_s − (G c)_{s'},
‖u‖² = G_ss − 2G_ss' + G_s's'). Variants (SPEC §5.8), chosen by the caller:

1. per-block raw global backbone, consecutive-checkpoint updates, label = integer midpoint;
   legacy "no sign fix" reproduces the reference's sign artefact (W9);
2. whole-trunk row-normalised sign-fixed backbone, fixed-lag updates u(s) = θ(s) − θ(s − lag),
   mean |cos| overall and "early" (s ≤ early_max);
3. window backbone evaluated at given steps.

Noise floor of |cos| with a random direction in D dims: ``noise_floor`` (E|cos| = √(2/(πD))).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backbone_lab.analysis.gram import DriftGram
from backbone_lab.analysis.noise_floor import noise_floor_record
from backbone_lab.analysis.sign_changes import first_sign_change_step


def consecutive_pairs(steps: Sequence[int]) -> list[tuple[int, int]]:
    """(previous, current) for consecutive analysed steps."""
    st = [int(s) for s in steps]
    return list(zip(st[:-1], st[1:]))


def lag_pairs(steps: Sequence[int], lag: int) -> list[tuple[int, int]]:
    """(s − lag, s) for every s whose predecessor exactly ``lag`` earlier is stored."""
    ss = set(int(s) for s in steps)
    return [(s - lag, s) for s in sorted(ss) if s - lag in ss]


def update_alignment(gram: DriftGram, coeffs: np.ndarray, pairs: Sequence[tuple[int, int]], label: str = "mid") -> dict:
    """Cosines of updates θ(s) − θ(s') with the unit direction Xᵀcoeffs.

    Args:
        pairs: (s', s) step pairs, s' < s.
        label: "mid" (integer midpoint (s'+s)//2, reference variant 1), "end" (s) or "start".
    Returns {step, step_from, step_to, cos, abs_cos, norm_u} as arrays, plus noise floor.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    c = c / gram.norm(c)
    p = gram.G @ c
    G = gram.G
    i0 = gram.indices([a for a, _ in pairs])
    i1 = gram.indices([b for _, b in pairs])
    dot = p[i1] - p[i0]
    nu = np.sqrt(np.clip(G[i1, i1] - 2 * G[i1, i0] + G[i0, i0], 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(nu > 0, dot / np.where(nu > 0, nu, 1), np.nan)
    s0 = np.array([a for a, _ in pairs], dtype=np.int64)
    s1 = np.array([b for _, b in pairs], dtype=np.int64)
    lab = {"mid": (s0 + s1) // 2, "end": s1, "start": s0}[label]
    return {"step": lab, "step_from": s0, "step_to": s1, "cos": cos, "abs_cos": np.abs(cos), "norm_u": nu}


def alignment_summary(res: dict, early_max: int | None = None, dim: int | None = None) -> dict:
    """Mean/median/max |cos|, mean |cos| for step_to ≤ early_max, sign-flip step, noise floor ratio."""
    a = res["abs_cos"]
    ok = np.isfinite(a)
    out = {
        "n": int(ok.sum()),
        "mean_abs_cos": float(np.mean(a[ok])) if ok.any() else None,
        "median_abs_cos": float(np.median(a[ok])) if ok.any() else None,
        "max_abs_cos": float(np.max(a[ok])) if ok.any() else None,
        "sign_flip_step": first_sign_change_step(res["step"][ok], res["cos"][ok]),
    }
    if early_max is not None:
        m = ok & (res["step_to"] <= early_max)
        out["early_max_step"] = int(early_max)
        out["mean_abs_cos_early"] = float(np.mean(a[m])) if m.any() else None
    if dim is not None:
        nf = noise_floor_record(dim)
        out["noise_floor"] = nf
        out["mean_over_noise_floor"] = out["mean_abs_cos"] / nf["mean_abs_cos"] if out["mean_abs_cos"] is not None else None
    return out


def rolling_reference_alignment(gram: DriftGram, roll, pairs: Sequence[tuple[int, int]], out_of_sample: bool = True) -> dict:
    """Cosines of updates u = θ(s) − θ(s') with a rolling backbone (paper §4.8, §9.2; out of sample).

    Out of sample (default): the reference is the latest rolling window (``roll``, a
    `RollingResult` over the same Gram) whose last checkpoint is ≤ s' = s − Δ, so the window holds
    nothing of u. In sample (``out_of_sample=False``, the paper's construction, kept as a labelled
    legacy): the latest window ending at ≤ s, i.e. the window ending at s, which contains u itself
    and aligns with it even for a random walk. Both variants use the same updates: those with an
    out-of-sample window (s' ≥ the first window's end); the others are dropped.

    Returns {step (= s), step_from, step_to, ref_end, cos, abs_cos, norm_u} as arrays.
    """
    ends = np.asarray(roll.end, dtype=np.int64)
    keep = [(a, b) for a, b in pairs if len(ends) and a >= ends[0]]
    s0 = np.array([a for a, _ in keep], dtype=np.int64)
    s1 = np.array([b for _, b in keep], dtype=np.int64)
    limit = s0 if out_of_sample else s1
    w = np.searchsorted(ends, limit, side="right") - 1  # latest window with end ≤ limit
    G = gram.G
    i0, i1 = gram.indices(s0.tolist()), gram.indices(s1.tolist())
    P = roll.coeffs @ G  # (nw, T): <v_roll(w), x_j>
    dot = P[w, i1] - P[w, i0] if len(keep) else np.zeros(0)
    nu = np.sqrt(np.clip(G[i1, i1] - 2 * G[i1, i0] + G[i0, i0], 0, None)) if len(keep) else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(nu > 0, dot / np.where(nu > 0, nu, 1), np.nan)
    return {"step": s1, "step_from": s0, "step_to": s1, "ref_end": ends[w] if len(keep) else np.zeros(0, np.int64),
            "cos": cos, "abs_cos": np.abs(cos), "norm_u": nu}
