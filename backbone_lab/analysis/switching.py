"""Switching directions between p_ood peaks and troughs (paper §8 Eqs. 10–12; PAPER_MAP §5.12, W11).

* Peak/trough detection on the p_ood series with the reference's prominence rule.
* Switch pairs (peak, first later trough), optional tiers from the eval noise σ.
* v_sw = (θ_peak − θ_trough)/‖·‖, its backbone alignment <v_sw, v_b>, share <v_sw, v_b>², the
  transverse energy E_{2:k} = Σ_{j=2..k} <v̂_sw⊥, v_j>², pairwise cosines.
* A *meaningful* dimensionality estimate (W11): instead of counting Gram–Schmidt residuals above
  an absolute 1e-8 (any m generic vectors in 25M dims pass), compare the spectrum of the
  switching directions (participation ratio, k95 of their unit-vector Gram, sequential residual
  curve) with (a) a same-regime baseline — displacements over the same time lag ending at the
  peak, i.e. ordinary drift in the same phase — and (b) the analytic random-direction value.
All from the drift Gram (directions are coefficient vectors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backbone_lab.analysis.gram import DriftGram


def detect_extrema(values: Sequence[float], prominence: float = 0.03, k: int = 3) -> tuple[list[int], list[int]]:
    """Indices of peaks and troughs (PAPER_MAP §5.12).

    i is a peak if v_i > both neighbours and v_i − max(min(v_{i−k..i−1}), min(v_{i+1..i+k})) ≥
    prominence; a trough if v_i < both neighbours and min(max(left k), max(right k)) − v_i ≥
    prominence. Endpoints excluded. NaNs are never extrema.
    """
    v = np.asarray(values, dtype=np.float64)
    peaks, troughs = [], []
    for i in range(1, len(v) - 1):
        if not np.isfinite(v[i - 1: i + 2]).all():
            continue
        left = v[max(0, i - k): i]
        right = v[i + 1: i + 1 + k]
        left, right = left[np.isfinite(left)], right[np.isfinite(right)]
        if len(left) == 0 or len(right) == 0:
            continue
        if v[i] > v[i - 1] and v[i] > v[i + 1]:
            if v[i] - max(left.min(), right.min()) >= prominence - 1e-12:
                peaks.append(i)
        elif v[i] < v[i - 1] and v[i] < v[i + 1]:
            if min(left.max(), right.max()) - v[i] >= prominence - 1e-12:
                troughs.append(i)
    return peaks, troughs


def switch_pairs(steps: Sequence[int], values: Sequence[float], peaks: Sequence[int], troughs: Sequence[int], sigma: float | None = None) -> list[dict]:
    """Each peak paired with the first later trough: {peak, trough, delta_p, tier}.

    Tier (with eval noise σ): A if Δp ≥ 3σ, B if ≥ 2σ, else C; None without σ.
    """
    st = np.asarray(steps)
    v = np.asarray(values, dtype=np.float64)
    out = []
    for p in peaks:
        later = [t for t in troughs if t > p]
        if not later:
            continue
        t = later[0]
        dp = float(v[p] - v[t])
        tier = None
        if sigma is not None and sigma > 0:
            tier = "A" if dp >= 3 * sigma else "B" if dp >= 2 * sigma else "C"
        out.append({"peak": int(st[p]), "trough": int(st[t]), "delta_p": dp, "tier": tier})
    return out


def _unit_disp(gram: DriftGram, a: int, b: int) -> tuple[np.ndarray, float]:
    """Coefficients of the unit vector (θ(a) − θ(b))/‖·‖ and the norm."""
    c = np.zeros(len(gram.steps))
    c[gram.index(a)] += 1.0
    c[gram.index(b)] -= 1.0
    n = gram.norm(c)
    return (c / n if n > 0 else c), n


def gram_schmidt_residuals(gram: DriftGram, C: np.ndarray) -> np.ndarray:
    """Sequential relative residuals: ‖v_j − P_{<j} v_j‖/‖v_j‖ for the rows of C (m, T)."""
    M = C @ gram.G @ C.T
    m = len(M)
    res = np.zeros(m)
    for j in range(m):
        if j == 0:
            res[j] = 1.0 if M[0, 0] > 0 else 0.0
            continue
        A = M[:j, :j]
        b = M[:j, j]
        x = np.linalg.lstsq(A, b, rcond=1e-12)[0]
        r2 = M[j, j] - b @ x
        res[j] = np.sqrt(max(r2, 0.0) / M[j, j]) if M[j, j] > 0 else 0.0
    return res


def spectrum_dimension(gram: DriftGram, C: np.ndarray) -> dict:
    """Participation ratio (Σλ)²/Σλ² and k90/k95 of the Gram of unit vectors (rows of C)."""
    M = C @ gram.G @ C.T
    lam = np.clip(np.linalg.eigvalsh(0.5 * (M + M.T))[::-1], 0, None)
    tot = lam.sum()
    if tot <= 0:
        return {"participation_ratio": 0.0, "k90": 0, "k95": 0, "eigenvalues": []}
    cum = np.cumsum(lam) / tot
    return {
        "participation_ratio": float(tot**2 / np.sum(lam**2)),
        "k90": int(np.searchsorted(cum, 0.90 - 1e-12) + 1),
        "k95": int(np.searchsorted(cum, 0.95 - 1e-12) + 1),
        "eigenvalues": [float(x) for x in lam],
    }


def random_baseline_pr(m: int, dim: int) -> float:
    """Expected participation ratio of m random unit vectors in D dims: m² / (m + m(m−1)/D)."""
    return float(m * m / (m + m * (m - 1) / dim))


def switching_geometry(
    gram: DriftGram,
    pairs: Sequence[tuple[int, int]],
    backbone: np.ndarray,
    basis: np.ndarray | None = None,
    top_k: int = 6,
    analysed_steps: Sequence[int] | None = None,
) -> dict:
    """Geometry of switching directions v_sw = (θ_peak − θ_trough)/‖·‖.

    Args:
        pairs: (peak_step, trough_step) pairs.
        backbone: (T,) coefficients of the unit (sign-fixed) backbone v_b.
        basis: (T, K) coefficients of unit principal directions v_1..v_K (v_1 ≈ v_b) for E_{2:k}.
        top_k: upper index of E_{2:k} (paper 6).
        analysed_steps: steps available for the same-regime baseline displacements.
    Returns per-pair records, pairwise cosine matrix and the dimensionality comparison.
    """
    vb = np.asarray(backbone, dtype=np.float64)
    vb = vb / gram.norm(vb)
    recs, coeffs = [], []
    for p, t in pairs:
        c, n = _unit_disp(gram, p, t)
        al = float(c @ gram.G @ vb)
        rec = {"peak": int(p), "trough": int(t), "norm": n, "backbone_cos": al, "backbone_share": al * al}
        perp = c - al * vb
        pn = gram.norm(perp)
        if basis is not None and pn > 0:
            perp = perp / pn
            proj_perp = perp @ gram.G @ basis  # <v_sw⊥, v_j>
            proj_raw = c @ gram.G @ basis
            kk = min(top_k, basis.shape[1])
            rec["E_2_k"] = float(np.sum(proj_perp[1:kk] ** 2))
            rec["E_2_k_unresidualised"] = float(np.sum(proj_raw[1:kk] ** 2))
            rec["E_2_j_cumulative"] = [float(x) for x in np.cumsum(proj_perp[1:] ** 2)]
        recs.append(rec)
        coeffs.append(c)
    out: dict = {"pairs": recs, "top_k": top_k}
    if not coeffs:
        return out
    C = np.array(coeffs)
    out["pairwise_cos"] = (C @ gram.G @ C.T).tolist()
    dim = {"switch": {**spectrum_dimension(gram, C), "gs_residuals": gram_schmidt_residuals(gram, C).tolist()}}
    # same-regime baseline: displacement over the same lag ending at the peak (or starting at the trough)
    if analysed_steps is not None:
        have = set(int(s) for s in analysed_steps)
        base = []
        for p, t in pairs:
            lag = abs(t - p)
            for a, b in ((p, p - lag), (t + lag, t)):
                if a in have and b in have and a != b:
                    base.append(_unit_disp(gram, a, b)[0])
                    break
        if len(base) >= 2:
            B = np.array(base)
            dim["same_regime_baseline"] = {**spectrum_dimension(gram, B), "gs_residuals": gram_schmidt_residuals(gram, B).tolist(), "n": len(base)}
    dim["random_baseline_participation_ratio"] = random_baseline_pr(len(C), gram.dim)
    sw = dim["switch"]["participation_ratio"]
    bl = dim.get("same_regime_baseline", {}).get("participation_ratio")
    dim["switch_over_baseline_pr"] = sw / bl if bl else None
    dim["note"] = ("participation ratio / k95 of the unit switching directions vs the same-regime drift displacements "
                   "and random directions; an absolute Gram-Schmidt threshold is not used (W11)")
    out["dimensionality"] = dim
    return out
