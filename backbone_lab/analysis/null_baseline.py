"""Null baselines of the trajectory statistics, simulated in the Gram domain (paper §4.1–4.8 numbers).

A process with *no* backbone already produces a large "PC1", a stable rolling direction and a
superlinear |a(t)|: an isotropic random walk's uncentered PCA is dominated by its own drift
(for equal increments in high D the raw PC1 tends to 8/π² ≈ 81 % of the variance, the first
Karhunen–Loève eigenvalue of Brownian motion, λ_k ∝ (k − ½)⁻²; row-normalised ≈ 69 % at T = 200;
more when the step sizes shrink). Every headline number is therefore shown beside the same
number for

* the **isotropic random walk** (`random_walk_gram`): increments δ_i between consecutive analysed
  snapshots with the trajectory's *own* norms ‖δ_i‖ (so the learning-rate schedule, the cadence and
  the anchor are matched automatically) and uniformly random directions in D dimensions;
* the **shuffled increments** (`shuffled_gram`): the trajectory's own increments in random order
  (same magnitudes, same pairwise angles, persistence in time destroyed).

Gram-domain simulation (no D-dimensional vector is formed). With unit directions û_i = z_i / ‖z_i‖,
z_i ~ N(0, I_D) i.i.d., the increment Gram is W_ij = n_i n_j ⟨û_i, û_j⟩, and the drift Gram of the
walk θ(s_k) − θ(anchor) = Σ_{i≤k} δ_i is L W Lᵀ (L the (m × m) lower-triangular matrix of ones).
Only ⟨û_i, û_j⟩ is random, i.e. the Gram Z Zᵀ of m = T − 1 standard Gaussian vectors in D
dimensions normalised to unit diagonal. Z Zᵀ ~ Wishart_m(D, I) exactly, and for D ≥ m the
Bartlett decomposition gives it in O(m²) draws: Z Zᵀ =_d A Aᵀ with A lower triangular,
A_ii = √χ²(D − i) (i = 0 … m − 1) and A_ij ~ N(0, 1) for i > j, all independent. So the
simulated Gram has exactly the law of the D-dimensional walk's Gram (not an O(1/√D)
approximation); for D < m the m × D Gaussian matrix itself is drawn (cheap then). Statistics are
then computed by `trajectory_statistics` — the very functions the real analysis uses (``pca_rows``,
``decompose``, ``rolling_backbones``, ``phase_backbones``, ``regime_fits``, ``update_alignment``) —
on the observed Gram and on every simulated one, so "observed" and "null" are the same numbers by
construction.

Shapes: T analysed snapshots (the anchor first), m = T − 1 increments; Grams are float64 in
squared parameter units. Cost per draw: one T × T PCA plus the rolling windows' small PCAs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.decomposition import decompose
from backbone_lab.analysis.gram import DriftGram, _blas_single_thread, coeff_rows
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.phases import default_boundary, phase_backbones
from backbone_lab.analysis.powerlaw import default_windows, regime_fits
from backbone_lab.analysis.rolling import rolling_backbones
from backbone_lab.analysis.update_alignment import alignment_summary, consecutive_pairs, lag_pairs, rolling_reference_alignment, update_alignment

# The statistics compared with the null, named as the numbers the stages declare (one name per
# number: pc1_rownorm_pct ... update_insample_abs_cos), else as the claim metrics (phase_pc1_gain,
# gamma_a_first). Summaries written before the declarations used update_mean_abs_cos(_early),
# update_oos/insample_mean_abs_cos and drift_final: readers look those names up as aliases.
METRICS: tuple[str, ...] = (
    "pc1_rownorm_pct", "pc1_raw_pct", "k95_rownorm", "k95_raw", "backbone_frac_mean", "backbone_frac_final",
    "drift", "rho_mean", "rho_min", "phase_pc1_gain", "phase_overlap", "gamma_a_first",
    "update_abs_cos", "update_abs_cos_early", "update_oos_abs_cos", "update_insample_abs_cos",
)
BAND = (2.5, 97.5)  # percentiles of the null band (a central 95 % interval)
MIN_DRAWS = 40  # fewest draws of a time-limited null (the 2.5 / 97.5 percentiles of fewer are the extremes)

METHOD = ("isotropic random walk with the trajectory's own increment norms between consecutive analysed snapshots "
          "(same steps, cadence and anchor); increment-direction Gram drawn exactly as a normalised Wishart_m(D, I) "
          "(Bartlett decomposition; explicit Gaussian vectors when D < m); statistics by the analysis' own functions")
SHUFFLED_METHOD = "the trajectory's own increments in a uniformly random order (rows/columns of the increment Gram permuted)"


# ----------------------------------------------------------------------------- Gram algebra
def increment_gram(G: np.ndarray) -> np.ndarray:
    """(m, m) Gram of the increments δ_i = x_{i+1} − x_i of the T rows of a drift Gram G (T, T).

    Rows of G in time order (the anchor first); m = T − 1.
    """
    G = np.asarray(G, dtype=np.float64)
    T = G.shape[0]
    D = np.zeros((T - 1, T))
    D[np.arange(T - 1), np.arange(1, T)] = 1.0
    D[np.arange(T - 1), np.arange(T - 1)] = -1.0
    W = D @ G @ D.T
    return 0.5 * (W + W.T)


def walk_gram(W: np.ndarray) -> np.ndarray:
    """(T, T) drift Gram of the walk x_0 = 0, x_k = Σ_{i<k} δ_i from its increment Gram W (m, m)."""
    m = W.shape[0]
    L = np.tril(np.ones((m, m)))
    G = np.zeros((m + 1, m + 1))
    G[1:, 1:] = L @ W @ L.T
    return 0.5 * (G + G.T)


def isotropic_direction_gram(m: int, D: int, rng: np.random.Generator) -> np.ndarray:
    """(m, m) Gram ⟨û_i, û_j⟩ of m independent uniformly random unit vectors in D dimensions.

    Exact in law: Z Zᵀ ~ Wishart_m(D, I) by the Bartlett decomposition when D ≥ m, the explicit
    (m, D) Gaussian matrix otherwise; then scaled to unit diagonal (û = z/‖z‖).
    """
    if D < m:
        Z = rng.standard_normal((m, D))
        S = Z @ Z.T
    else:
        A = np.tril(rng.standard_normal((m, m)), -1)
        A[np.diag_indices(m)] = np.sqrt(rng.chisquare(D - np.arange(m)))
        S = A @ A.T
    d = np.sqrt(np.clip(np.diag(S), 1e-300, None))
    U = S / d[:, None] / d[None, :]
    return 0.5 * (U + U.T)


def random_walk_gram(norms: np.ndarray, D: int, rng: np.random.Generator) -> np.ndarray:
    """(T, T) drift Gram of an isotropic random walk with increment norms `norms` (m,) in D dims."""
    n = np.asarray(norms, dtype=np.float64)
    U = isotropic_direction_gram(len(n), int(D), rng)
    return walk_gram(U * n[:, None] * n[None, :])


def shuffled_gram(W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, T) drift Gram of the walk of the increments with Gram W taken in a random order."""
    p = rng.permutation(W.shape[0])
    return walk_gram(W[np.ix_(p, p)])


# ----------------------------------------------------------------------------- statistics
def _fit_windows(cfg: AnalysisConfig, last_step: int) -> list[tuple[int, int]]:
    return [tuple(w) for w in cfg.fit_windows] if cfg.fit_windows else default_windows(int(last_step))


def update_pairs(steps: Sequence[int], cfg: AnalysisConfig, cadence: int) -> list[tuple[int, int]]:
    """The update pairs of the summary's headline |cos(u, v_b)|: fixed lag if any, else consecutive."""
    lag = cfg.update_lag or (cadence if cadence > 0 else None)
    pairs = lag_pairs(steps, lag) if lag else []
    return pairs or consecutive_pairs(steps)


def trajectory_statistics(gram: DriftGram, steps: Sequence[int], cfg: AnalysisConfig, cadence: int) -> dict[str, float | None]:
    """The `METRICS` of the drift Gram over `steps` (anchor = steps[0]), as the analysis computes them.

    pc1_* / k95_* as the ``pca`` stage (%, count), backbone_frac_* / drift as
    ``decomposition`` (fraction, parameter units), rho_* as ``rolling`` (|cos|), phase_* as
    ``phases`` (percentage points late − early, |cos|), gamma_a_first as ``fits`` (first window),
    update_* as ``update_alignment`` (|cos|; oos/insample against the rolling backbones).
    None where the analysis would skip the number (too few snapshots).
    """
    steps = [int(s) for s in steps]
    anchor, rows = steps[0], steps[1:]
    T = len(gram.steps)
    C = coeff_rows(T, gram.indices(rows), gram.index(anchor))
    p_raw = pca_rows(gram, C, row_normalise=False, n_dirs=1)
    p_rn = pca_rows(gram, C, row_normalise=True, top10_denominator=cfg.top10_denominator, n_dirs=1)
    main = p_rn if cfg.normalisation == "rownorm" else p_raw
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    out.update(pc1_rownorm_pct=100 * p_rn.pca.pc1, pc1_raw_pct=100 * p_raw.pca.pc1,
               k95_rownorm=float(p_rn.pca.k95), k95_raw=float(p_raw.pca.k95))
    try:
        dec = decompose(gram, main.v1, steps, anchor)
    except ValueError:  # a zero backbone (no motion at all)
        return out
    fb = dec.backbone_frac[1:]
    out.update(backbone_frac_mean=float(np.mean(fb)) if len(fb) else None, backbone_frac_final=float(dec.backbone_frac[-1]),
               drift=float(dec.norm_delta[-1]))
    roll = None
    if len(rows) >= cfg.rolling_window + 1:
        roll = rolling_backbones(gram, rows, window=cfg.rolling_window, stride=cfg.rolling_stride)
        if len(roll.rho):
            out.update(rho_mean=float(np.mean(roll.rho)), rho_min=float(np.min(roll.rho)))
    try:
        boundary = cfg.phase_boundary if cfg.phase_boundary is not None else default_boundary(rows)
        ph = phase_backbones(gram, steps, anchor, boundary)
        out.update(phase_pc1_gain=100 * (ph.pc1_late - ph.pc1_early), phase_overlap=ph.overlap)
    except ValueError:
        pass
    windows = _fit_windows(cfg, steps[-1])
    if windows:
        f = regime_fits(steps, dec.a, dec.norm_r, windows[:1])
        out["gamma_a_first"] = next(iter(f.values()))["gamma_a"]
    pairs = update_pairs(steps, cfg, cadence)
    if pairs:
        ua = alignment_summary(update_alignment(gram, dec.coeffs, pairs, label="end"), cfg.early_max_step)
        out.update(update_abs_cos=ua["mean_abs_cos"], update_abs_cos_early=ua.get("mean_abs_cos_early"))
        if roll is not None:
            for key, oos in (("update_oos_abs_cos", True), ("update_insample_abs_cos", False)):
                r = rolling_reference_alignment(gram, roll, pairs, out_of_sample=oos)
                out[key] = alignment_summary(r)["mean_abs_cos"]
    return out


# ----------------------------------------------------------------------------- bands
def null_draws(gram: DriftGram, steps: Sequence[int], cfg: AnalysisConfig, cadence: int, draws: int, seed: int,
               kind: str = "random_walk", max_seconds: float | None = None, min_draws: int = MIN_DRAWS) -> dict[str, np.ndarray]:
    """metric -> (n,) values over n ≤ `draws` simulated Grams (NaN where a statistic is undefined).

    kind: ``random_walk`` (isotropic, own increment norms) or ``shuffled`` (own increments, random order).
    max_seconds: stop drawing once this much time is spent (after at least `min_draws` draws);
        n is then the number of draws made (the same seed gives the same first n draws).
    """
    idx = gram.indices(steps)
    G = gram.G[np.ix_(idx, idx)]
    W = increment_gram(G)
    norms = np.sqrt(np.clip(np.diag(W), 0, None))
    rng = np.random.default_rng(seed)
    st = np.asarray(steps, dtype=np.int64)
    make: Callable[[], np.ndarray]
    if kind == "random_walk":
        make = lambda: random_walk_gram(norms, gram.dim, rng)  # noqa: E731
    elif kind == "shuffled":
        make = lambda: shuffled_gram(W, rng)  # noqa: E731
    else:
        raise ValueError(f"unknown null kind {kind!r} (random_walk | shuffled)")
    vals = {k: np.full(draws, np.nan) for k in METRICS}
    t0, done = time.perf_counter(), 0
    with _blas_single_thread():  # many tiny eigh calls: threaded BLAS only adds overhead (3x here)
        for d in range(draws):
            if max_seconds is not None and d >= min_draws and time.perf_counter() - t0 > max_seconds:
                break
            g = DriftGram(steps=st, G=make(), ref_step=int(st[0]), subset=gram.subset, dim=gram.dim)
            for k, v in trajectory_statistics(g, steps, cfg, cadence).items():
                if v is not None:
                    vals[k][d] = v
            done = d + 1
    return {k: v[:done] for k, v in vals.items()}


def band(values: np.ndarray) -> dict[str, float | None]:
    """{mean, lo, hi}: mean and the central 95 % interval (2.5 / 97.5 percentiles) of finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "lo": None, "hi": None}
    lo, hi = np.percentile(v, BAND)
    return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi)}


def compare_with_null(observed: dict[str, float | None], null: dict[str, np.ndarray]) -> dict[str, dict]:
    """metric -> {observed, mean, lo, hi, beyond}; beyond: observed outside [lo, hi] (None when undefined)."""
    out = {}
    for k in METRICS:
        b = band(null[k])
        x = observed.get(k)
        beyond = None if x is None or b["lo"] is None else bool(x < b["lo"] or x > b["hi"])
        out[k] = {"observed": x, **b, "beyond": beyond}
    return out
