"""Power-law fits and correlations (paper §4.5–4.6, §6.2; PAPER_MAP §5.6, §5.7, W13).

* ``fit_power_law``: OLS of ln y = γ ln t + ln C in natural-log space over points lo < t ≤ hi with
  t > 0 and y > 0 (t = raw step number, no per-window origin); R² in log space; n reported.
* ``pearson``: Pearson r with n and a (moving-block) bootstrap confidence interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# PAPER_MAP §5.6 windows (lo, hi] of the main 10k runs
MAIN_WINDOWS: tuple[tuple[int, int], ...] = ((0, 2000), (2000, 4000), (0, 4000), (4000, 6000), (4000, 10000), (6000, 10000))


def window_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def fit_power_law(t: Sequence[float], y: Sequence[float], lo: float = -np.inf, hi: float = np.inf) -> dict:
    """Fit y = C t^γ on points lo < t ≤ hi, t > 0, y > 0 (y given as |a| or ‖r‖).

    Returns {gamma, C, R2, n} (values None when fewer than 2 points).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = (t > lo) & (t <= hi) & (t > 0) & np.isfinite(y) & (y > 0)
    n = int(m.sum())
    if n < 2:
        return {"gamma": None, "C": None, "R2": None, "n": n}
    x, z = np.log(t[m]), np.log(y[m])
    A = np.vstack([x, np.ones_like(x)]).T
    (g, lc), *_ = np.linalg.lstsq(A, z, rcond=None)
    ss_res = float(np.sum((z - (g * x + lc)) ** 2))
    ss_tot = float(np.sum((z - z.mean()) ** 2))
    r2 = 1.0 - ss_res / max(ss_tot, 1e-30)
    return {"gamma": float(g), "C": float(np.exp(lc)), "R2": float(r2), "n": n}


def regime_fits(steps: Sequence[float], a: Sequence[float], norm_r: Sequence[float], windows: Sequence[tuple[int, int]] = MAIN_WINDOWS) -> dict:
    """Per window: {gamma_a, C_a, R2_a, n_a, gamma_r, C_r, R2_r, n_r} for |a(t)| and ‖r(t)‖."""
    out = {}
    aa = np.abs(np.asarray(a, dtype=np.float64))
    for lo, hi in windows:
        fa = fit_power_law(steps, aa, lo, hi)
        fr = fit_power_law(steps, norm_r, lo, hi)
        out[window_label(lo, hi)] = {
            "lo": lo, "hi": hi,
            "gamma_a": fa["gamma"], "C_a": fa["C"], "R2_a": fa["R2"], "n_a": fa["n"],
            "gamma_r": fr["gamma"], "C_r": fr["C"], "R2_r": fr["R2"], "n_r": fr["n"],
        }
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def pearson(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0, block: int = 1, ci: float = 0.95) -> dict:
    """Pearson r of paired samples with n and a bootstrap CI.

    Args:
        n_boot: bootstrap resamples (0 disables the CI).
        block: moving-block length (1 = ordinary pair bootstrap; >1 respects autocorrelation of
            time series, PAPER_MAP W13).
    Returns {r, n, ci_low, ci_high, n_boot, block}; r None if < 3 points or a constant series.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    r = _corr(x, y)
    lo = hi = None
    if r is not None and n_boot > 0:
        rng = np.random.default_rng(seed)
        b = max(1, min(int(block), n))
        nb = int(np.ceil(n / b))
        vals = []
        for _ in range(n_boot):
            starts = rng.integers(0, n - b + 1, size=nb)
            idx = (starts[:, None] + np.arange(b)[None, :]).reshape(-1)[:n]
            v = _corr(x[idx], y[idx])
            if v is not None:
                vals.append(v)
        if vals:
            q = (1 - ci) / 2
            lo, hi = float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))
    return {"r": r, "n": n, "ci_low": lo, "ci_high": hi, "n_boot": n_boot, "block": block}


def windowed_correlations(
    steps: Sequence[float],
    p: Sequence[float],
    norm_r: Sequence[float],
    windows: Sequence[tuple[int, int]] = MAIN_WINDOWS,
    n_boot: int = 2000,
    seed: int = 0,
    block: int = 1,
    exclude_zero_r: bool = True,
) -> dict:
    """corr(p, ‖r‖) over points with finite p and ‖r‖ > 0: ``full`` and per window (lo, hi]
    (windows with < 3 points are None) — PAPER_MAP §5.7.

    ``exclude_zero_r=False`` keeps the anchor point (‖r‖ = 0, t > 0) like the reference's beta2
    script does for every window and as the paper's seed-42 "0–4k: +0.856" requires (the
    reference's main-run script drops it: +0.848). ``full`` then spans t > 0.
    """
    t = np.asarray(steps, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    r = np.asarray(norm_r, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(r) & ((r > 0) if exclude_zero_r else (t > 0))
    out = {"full": pearson(p[ok], r[ok], n_boot=n_boot, seed=seed, block=block)}
    for lo, hi in windows:
        m = ok & (t > lo) & (t <= hi)
        out[window_label(lo, hi)] = pearson(p[m], r[m], n_boot=n_boot, seed=seed, block=block) if m.sum() >= 3 else {"r": None, "n": int(m.sum())}
    return out


def default_windows(last_step: int) -> list[tuple[int, int]]:
    """PAPER_MAP §5.6 windows for runs reaching 10k; otherwise quarters/halves of the run."""
    if last_step >= 10000:
        return list(MAIN_WINDOWS)
    q = [int(round(last_step * f)) for f in (0.25, 0.5, 0.75)]
    h = q[1]
    return [(0, h), (h, last_step), (0, last_step), (0, q[0]), (q[2], last_step)]
