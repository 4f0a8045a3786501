"""Null baselines, out-of-sample alignment and the shrinkage direction, on planted trajectories.

Known answers: a random walk is inside its own null band (and at the stated rate over many
independent walks drawn with D-dimensional vectors, which also checks the Gram-domain
simulation); a persistent planted direction is beyond it; an update measured against a rolling
backbone that contains it aligns far above the noise floor while the out-of-sample one sits at
it; a pure weight-decay trajectory's backbone is θ(anchor).
"""

from __future__ import annotations

import numpy as np
import pytest

from backbone_lab.analysis import null_baseline as nb
from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import coeff_rows, gram_from_matrix
from backbone_lab.analysis.noise_floor import noise_floor
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.rolling import rolling_backbones
from backbone_lab.analysis.run_analysis import run_analysis
from backbone_lab.analysis.summary import Summary
from backbone_lab.analysis.update_alignment import lag_pairs, rolling_reference_alignment
from backbone_lab.trajectory.store import TrajectoryWriter

LAYOUT = [("blocks.0.attn.qkv.weight", (48, 16)), ("blocks.0.mlp.w_up.weight", (32, 16)), ("blocks.1.mlp.w_down.weight", (16, 32))]
D_STORE = sum(int(np.prod(s)) for _, s in LAYOUT)  # 1,792


def schedule(T: int) -> np.ndarray:
    """Increment norms of a warm-up + cosine-decay learning rate (m = T − 1 increments)."""
    t = np.arange(1, T)
    return np.minimum(1.0, t / 3) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / T)))


def walk(T: int, D: int, rng, norms=None) -> np.ndarray:
    """(T, D) positions of an isotropic walk from 0 with exact increment norms."""
    norms = schedule(T) if norms is None else norms
    Z = rng.standard_normal((T - 1, D))
    Z *= (norms / np.linalg.norm(Z, axis=1))[:, None]
    return np.vstack([np.zeros(D), np.cumsum(Z, axis=0)])


def write_run(root, theta, steps, val_loss=None):
    w = TrajectoryWriter(root / "trajectory", meta={"preset": "planted"})
    for s, th in zip(steps, theta):
        off, d = 0, {}
        for n, sh in LAYOUT:
            k = int(np.prod(sh))
            d[n] = th[off:off + k].reshape(sh).astype(np.float32)
            off += k
        w.append(int(s), d)
    if val_loss is not None:
        with open(root / "eval_metrics.csv", "w") as f:
            f.write("step,val_loss,p_ood\n")
            for s, v in zip(steps, val_loss):
                f.write(f"{int(s)},{v},0.1\n")
    return root


def fast_cfg(**kw) -> AnalysisConfig:
    base = dict(figures=False, per_block=False, corr_bootstrap=0, switching=False, rolling_window=6, null_draws=120)
    return AnalysisConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- Gram-domain simulation
def test_bartlett_direction_gram_has_the_law_of_gaussian_vectors():
    """E⟨û_i, û_j⟩² = 1/D for independent uniform unit vectors; the Bartlett draw and explicit
    D-dimensional vectors give the same walk PC1 distribution."""
    m, D, n = 12, 40, 600
    rng = np.random.default_rng(1)
    off = ~np.eye(m, dtype=bool)
    U = [nb.isotropic_direction_gram(m, D, rng) for _ in range(n)]
    assert all(np.allclose(np.diag(u), 1.0) for u in U)
    assert np.mean([np.mean(u[off] ** 2) for u in U]) == pytest.approx(1 / D, rel=0.05)
    T, norms = m + 1, schedule(m + 1)
    C = coeff_rows(T, np.arange(1, T), 0)
    pc1_bartlett = [pca_rows(nb.random_walk_gram(norms, D, rng), C).pca.pc1 for _ in range(n)]
    pc1_explicit = [pca_rows(gram_from_matrix(walk(T, D, rng, norms)).G, C).pca.pc1 for _ in range(n)]
    se = np.hypot(np.std(pc1_bartlett), np.std(pc1_explicit)) / np.sqrt(n)
    assert abs(np.mean(pc1_bartlett) - np.mean(pc1_explicit)) < 4 * se
    assert abs(np.std(pc1_bartlett) / np.std(pc1_explicit) - 1) < 0.15
    # D < m: explicit vectors, rank D
    assert np.linalg.matrix_rank(nb.isotropic_direction_gram(10, 3, rng)) == 3


def test_walk_gram_is_the_gram_of_the_partial_sums():
    rng = np.random.default_rng(2)
    X = walk(9, 50, rng)
    g = gram_from_matrix(X)
    W = nb.increment_gram(g.G)
    inc = np.diff(X, axis=0)
    assert np.allclose(W, inc @ inc.T)
    assert np.allclose(nb.walk_gram(W), g.G)
    # shuffling keeps the final drift (a sum does not depend on the order) but not the path
    S = nb.shuffled_gram(W, rng)
    assert S[-1, -1] == pytest.approx(g.G[-1, -1]) and not np.allclose(S, g.G)


def test_null_band_covers_random_walks_at_the_stated_rate():
    """100 independent D-dimensional walks with the schedule's increment norms: their statistics
    fall inside the 95 % band of the Gram-domain null (computed from one of them) ≥ 85 % of the time."""
    T, D = 21, 400
    steps = list(range(0, 200 * T, 200))
    cfg = fast_cfg()
    rng = np.random.default_rng(3)
    g0 = gram_from_matrix(walk(T, D, rng), steps)
    null = nb.null_draws(g0, steps, cfg, 200, draws=300, seed=4)
    bands = {k: nb.band(null[k]) for k in ("pc1_rownorm_pct", "pc1_raw_pct", "rho_mean", "gamma_a_first", "update_abs_cos")}
    inside = {k: 0 for k in bands}
    for _ in range(100):
        obs = nb.trajectory_statistics(gram_from_matrix(walk(T, D, rng), steps), steps, cfg, 200)
        for k, b in bands.items():
            inside[k] += b["lo"] <= obs[k] <= b["hi"]
    assert all(85 <= v for v in inside.values()), inside
    assert bands["pc1_rownorm_pct"]["hi"] - bands["pc1_rownorm_pct"]["lo"] < 15  # a band, not everything


# ----------------------------------------------------------------------------- through analyze
def test_random_walk_is_within_null_and_planted_direction_beyond(tmp_path):
    T = 31
    steps = np.arange(T) * 100
    rng = np.random.default_rng(5)
    noise = walk(T, D_STORE, rng) * 0.05
    theta0 = rng.standard_normal(D_STORE) * 0.5
    s_walk = Summary(run_analysis(write_run(tmp_path / "walk", theta0 + noise, steps), fast_cfg()))
    v = rng.standard_normal(D_STORE)
    v /= np.linalg.norm(v)
    planted = noise + np.outer((steps / steps[-1]) ** 1.5, v) * 1.0
    s_plant = Summary(run_analysis(write_run(tmp_path / "planted", theta0 + planted, steps), fast_cfg()))

    assert s_walk.beyond_null is False and "within_null" in s_walk.flag_codes
    assert s_plant.beyond_null is True and "within_null" not in s_plant.flag_codes, s_plant.null_band("pc1_rownorm_pct")
    for s in (s_walk, s_plant):
        band = s.null_band("pc1_rownorm_pct")
        assert band["observed"] == pytest.approx(s.pc1_rownorm_pct, rel=1e-9)  # the analysis' own number
        assert s.null_band("rho_mean")["observed"] == pytest.approx(s.rho_mean, rel=1e-9)
        assert s.null_band("update_abs_cos")["observed"] == pytest.approx(s.update_mean_abs_cos, rel=1e-9)
        assert set(nb.METRICS) <= set(s["null_baseline"]["metrics"]) and set(s["null_baseline"]["shuffled"]) == set(nb.METRICS)
        assert s["null_baseline"]["draws"] == s["null_baseline"]["draws_requested"] == 120
        report = (tmp_path / ("walk" if s is s_walk else "planted") / "analysis" / "report.md").read_text()
        assert "Null baselines" in report and "random walk mean [95 % band]" in report
    w, p = s_walk.null_band("pc1_rownorm_pct"), s_plant.null_band("pc1_rownorm_pct")
    assert w["lo"] <= w["observed"] <= w["hi"] and p["observed"] > p["hi"]
    # the null follows each run's own increment norms: the planted run's grow, so its null is lower
    assert p["observed"] - p["hi"] > 5 and p["mean"] < w["mean"]


# ----------------------------------------------------------------------------- out-of-sample alignment
def test_in_sample_alignment_is_high_out_of_sample_at_the_floor():
    T, D = 41, 20000
    steps = list(range(0, 100 * T, 100))
    rng = np.random.default_rng(6)
    g = gram_from_matrix(walk(T, D, rng, norms=np.ones(T - 1)), steps)
    roll = rolling_backbones(g, steps[1:], window=10)
    pairs = lag_pairs(steps, 100)
    ins = rolling_reference_alignment(g, roll, pairs, out_of_sample=False)
    oos = rolling_reference_alignment(g, roll, pairs, out_of_sample=True)
    floor = noise_floor(D)
    assert np.array_equal(ins["step"], oos["step"]) and ins["step"][0] == 1100 and len(oos["step"]) == 30  # the same updates
    assert np.all(ins["ref_end"] == ins["step_to"]) and np.all(oos["ref_end"] <= oos["step_from"])
    assert np.mean(ins["abs_cos"]) > 5 * floor  # grows as √D: the in-sample window contains u (≈ 0.04 at any D)
    assert 0.5 * floor < np.mean(oos["abs_cos"]) < 2 * floor


def test_alignment_keys_in_summary(tmp_path):
    T = 25
    steps = np.arange(T) * 100
    rng = np.random.default_rng(7)
    s = Summary(run_analysis(write_run(tmp_path / "w", walk(T, D_STORE, rng), steps), fast_cfg(null_draws=0)))
    rr = s["update_alignment"]["rolling_reference"]
    assert rr["out_of_sample"]["n"] == rr["in_sample_legacy"]["n"] > 0
    assert s.update_insample_mean_abs_cos > 3 * s.update_oos_mean_abs_cos
    assert s["null_baseline"] == {"skipped": "null_draws=0"} and s.beyond_null is None
    import csv

    rows = list(csv.DictReader(open(tmp_path / "w" / "analysis" / "update_alignment.csv")))
    assert {r["variant"] for r in rows} >= {"consecutive", "rolling_out_of_sample", "rolling_in_sample_legacy"}


# ----------------------------------------------------------------------------- controls
def test_shrinkage_cos_of_pure_weight_decay_and_learning_record(tmp_path):
    T = 21
    steps = np.arange(T) * 50
    rng = np.random.default_rng(8)
    theta0 = rng.standard_normal(D_STORE)
    decay = (1 - 1e-3) ** steps
    theta = decay[:, None] * theta0 + 1e-4 * walk(T, D_STORE, rng)
    loss = 6.25 - 0.01 * steps / steps[-1]
    s = Summary(run_analysis(write_run(tmp_path / "sgd", theta, steps, loss), fast_cfg(null_draws=0)))
    assert s.shrinkage_cos > 0.999 and s["controls"]["anchor_norm"] == pytest.approx(np.linalg.norm(theta0), rel=1e-5)
    assert s["learning"]["val_loss_first"] == pytest.approx(6.25) and s["learning"]["drop"] == pytest.approx(0.01)
    assert s.val_loss_drop == pytest.approx(0.01)
    sp = Summary(run_analysis(tmp_path / "sgd", fast_cfg(null_draws=0, project_out_anchor=True, out_dir=str(tmp_path / "proj"))))
    assert sp.shrinkage_cos < 1e-6 and sp["controls"]["shrinkage_cos_unprojected"] > 0.999
    assert sp.pc1_rownorm_pct < s.pc1_rownorm_pct - 20  # what is left is the tiny walk
    # a learned direction orthogonal to θ(anchor) (random: |cos| ~ 1/√D)
    v = rng.standard_normal(D_STORE)
    planted = theta0 + np.outer(steps / steps[-1], v / np.linalg.norm(v)) + 1e-3 * walk(T, D_STORE, rng)
    s2 = Summary(run_analysis(write_run(tmp_path / "adam", planted, steps), fast_cfg(null_draws=0)))
    assert s2.shrinkage_cos < 0.15 and s2["learning"] is None


def test_time_limited_null_keeps_the_first_draws():
    """Past null_max_seconds the null stops after min_draws; the draws made are those of an unlimited run."""
    T = 15
    steps = list(range(0, 100 * T, 100))
    g = gram_from_matrix(walk(T, 300, np.random.default_rng(9)), steps)
    cfg = fast_cfg()
    limited = nb.null_draws(g, steps, cfg, 100, draws=50, seed=1, max_seconds=1e-9, min_draws=6)
    full = nb.null_draws(g, steps, cfg, 100, draws=8, seed=1)
    assert len(limited["pc1_rownorm_pct"]) == 6
    assert np.array_equal(limited["pc1_rownorm_pct"], full["pc1_rownorm_pct"][:6])
    with pytest.raises(ValueError, match="null_max_seconds"):
        AnalysisConfig(null_max_seconds=0)


def test_streamed_anchor_inner_products_match_dense(tmp_path):
    from backbone_lab.analysis.gram import stream_grams
    from backbone_lab.analysis.shrinkage import anchor_inner_products
    from backbone_lab.trajectory.store import TrajectoryReader

    T = 7
    steps = list(range(0, 10 * T, 10))
    rng = np.random.default_rng(10)
    theta = (rng.standard_normal(D_STORE) + walk(T, D_STORE, rng)).astype(np.float32)
    reader = TrajectoryReader(write_run(tmp_path / "r", theta, steps) / "trajectory")
    cols = reader.subset_columns("trunk")
    th = np.stack([reader.load(s).astype(np.float64) for s in steps])
    th = np.concatenate([th[:, c] for c in cols], axis=1)
    p_dense, q_dense = (th - th[2]) @ th[2], th[2] @ th[2]
    for kw in ({}, {"threads": 2, "chunk_bytes": 8 * T * 1024}, {"device": "cpu"}):  # chunks, threads, torch path
        g = stream_grams(reader, {"trunk": cols}, steps=steps, ref=steps[2], anchor_inner=True, **kw)["trunk"]
        assert np.allclose(g.meta["anchor_inner"]["p"], p_dense, rtol=1e-12, atol=1e-9)
        assert g.meta["anchor_inner"]["q"] == pytest.approx(q_dense, rel=1e-12)
    own = anchor_inner_products(reader, steps, steps[2], cols)
    assert np.allclose(own.p, p_dense, rtol=1e-12, atol=1e-9) and own.q == pytest.approx(q_dense, rel=1e-12)
