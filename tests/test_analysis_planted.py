"""Planted-structure trajectories with known answers, plus Gram-vs-dense checks per analysis."""

from __future__ import annotations

import numpy as np
import pytest

from backbone_lab.analysis.decomposition import decompose
from backbone_lab.analysis.gram import coeff_rows, gram_from_matrix, stream_grams
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.phases import default_boundary, phase_backbones
from backbone_lab.analysis.powerlaw import fit_power_law, pearson, regime_fits
from backbone_lab.analysis.reheating import reheating_projection
from backbone_lab.analysis.rolling import per_block_cw, rolling_backbones
from backbone_lab.analysis.switching import detect_extrema, switch_pairs, switching_geometry
from backbone_lab.analysis.noise_floor import noise_floor, noise_floor_record
from backbone_lab.analysis.update_alignment import lag_pairs, update_alignment
from backbone_lab.analysis.windows import matched_step, window_geometry
from backbone_lab.trajectory.store import TrajectoryWriter


def rotating(phi_deg=70.0, n_early=20, n_late=30, D=300, noise=1e-4, seed=0):
    """Drift along e1 until the boundary, then along u = cos φ e1 + sin φ e2 (steps 200·k)."""
    rng = np.random.default_rng(seed)
    phi = np.radians(phi_deg)
    e1, e2 = np.eye(D)[0], np.eye(D)[1]
    u = np.cos(phi) * e1 + np.sin(phi) * e2
    steps = np.arange(0, (n_early + n_late + 1) * 200, 200)
    X = np.zeros((len(steps), D))
    for i in range(1, len(steps)):
        X[i] = X[i - 1] + (e1 if i <= n_early else u)
    X[:, 2:] += noise * rng.standard_normal((len(steps), D - 2))
    X[0] = 0
    return X, steps, e1, u, phi


def test_phase_backbones_known_angle():
    X, steps, e1, u, phi = rotating()
    g = gram_from_matrix(X, steps)
    boundary = int(steps[20])
    assert default_boundary(steps[1:]) == 4000 == boundary
    ph = phase_backbones(g, steps, 0, boundary)
    assert ph.overlap == pytest.approx(np.cos(phi), abs=1e-4)
    assert ph.angle_deg == pytest.approx(70.0, abs=0.01)
    assert ph.pc1_early > 0.999 and ph.pc1_late > 0.999
    assert ph.n_early == 20 and ph.n_late == 30
    # short run: boundary falls back to mid-run
    assert default_boundary(list(range(100, 1100, 100))) in (500, 600)


def test_rolling_rho_known_rotation():
    X, steps, e1, u, phi = rotating()
    g = gram_from_matrix(X, steps)
    rr = rolling_backbones(g, steps[1:], window=10)
    assert len(rr.start) == 41 and rr.centre[0] == 1100 and rr.rho_step[0] == 1200
    # windows entirely inside one phase: identical direction
    inside = (rr.end[:-1] <= 4000) | (rr.start[:-1] >= 4000 + 200)
    inside &= (rr.end[1:] <= 4000) | (rr.start[1:] >= 4200)
    assert np.all(rr.rho[inside] > 1 - 1e-6)
    assert rr.rho.min() < 0.99 and 3000 < rr.rho_step[np.argmin(rr.rho)] < 6000
    ph = phase_backbones(g, steps, 0, 4000)
    ae, al = rr.alignment_with(g, ph.v_early), rr.alignment_with(g, ph.v_late)
    assert ae[0] == pytest.approx(1, abs=1e-6) and al[-1] == pytest.approx(1, abs=1e-6)
    assert ae[-1] == pytest.approx(np.cos(phi), abs=1e-4)
    # one window against a dense computation
    w = 7
    th = X[1:][w: w + 10]
    Y = th[1:] - th[0]
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    s = np.linalg.svd(Y, compute_uv=False)
    assert rr.pc1[w] == pytest.approx(s[0] ** 2 / np.sum(s**2), rel=1e-10)


def test_per_block_cw_not_reanchored():
    X, steps, *_ = rotating(noise=1e-3)
    g = gram_from_matrix(X, steps, subset="block0")
    pr = pca_rows(g, coeff_rows(len(steps), np.arange(1, len(steps)), 0), row_normalise=False, n_dirs=1)
    cw = per_block_cw({"block0": g}, steps[1:], 0, {"block0": pr.v1})
    d = cw["block0"]
    assert 0.9 < d["consecutive_abs_cos_min"] <= d["consecutive_abs_cos_max"] <= 1 + 1e-12
    assert d["cw_vs_global_max"] <= 1 + 1e-12


def test_power_law_known_exponents():
    t = np.arange(200, 10001, 200, dtype=float)
    y = 3.0 * t**1.7
    f = fit_power_law(t, y, 0, 2000)
    assert f["gamma"] == pytest.approx(1.7, abs=1e-12) and f["C"] == pytest.approx(3.0, rel=1e-10)
    assert f["R2"] == pytest.approx(1.0) and f["n"] == 10
    rng = np.random.default_rng(0)
    yn = y * np.exp(0.05 * rng.standard_normal(len(t)))
    fn = fit_power_law(t, yn, 0, 10000)
    assert abs(fn["gamma"] - 1.7) < 0.05 and 0.9 < fn["R2"] < 1
    # t <= 0 and y <= 0 points are dropped, windows are (lo, hi]
    assert fit_power_law([0, 1, 2, 4], [5, -1, 2, 4], 0, 4)["n"] == 2
    rf = regime_fits(t, -y, 0.5 * t**0.4, [(0, 4000), (4000, 10000)])
    assert rf["0-4000"]["gamma_a"] == pytest.approx(1.7) and rf["4000-10000"]["gamma_r"] == pytest.approx(0.4)
    assert rf["0-4000"]["n_a"] == 20 and rf["4000-10000"]["n_r"] == 30


def test_pipeline_recovers_planted_power_law(tmp_path):
    """a(t) = 0.002 t^1.5 along a fixed v, residual random walk: the decomposition + fit recover γ_a."""
    rng = np.random.default_rng(1)
    D = 4000
    v = rng.standard_normal(D)
    v /= np.linalg.norm(v)
    steps = np.arange(0, 4001, 200)
    X = np.outer(0.002 * steps**1.5, v) + 0.02 * np.cumsum(rng.standard_normal((len(steps), D)), axis=0) * (steps > 0)[:, None]
    g = gram_from_matrix(X, steps)
    T = len(steps)
    pr = pca_rows(g, coeff_rows(T, np.arange(1, T), 0), row_normalise=True)
    dec = decompose(g, pr.v1, steps, 0)
    f = fit_power_law(steps, np.abs(dec.a), 1000, 4000)
    assert f["gamma"] == pytest.approx(1.5, abs=0.02)


def test_pearson_ci_and_block():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60)
    y = 0.8 * x + 0.6 * rng.standard_normal(60)
    p = pearson(x, y, n_boot=500, seed=1)
    assert p["ci_low"] < p["r"] < p["ci_high"] and p["n"] == 60 and 0.6 < p["r"] < 0.95
    pb = pearson(x, y, n_boot=500, seed=1, block=5)
    assert pb["r"] == p["r"] and pb["block"] == 5
    assert pearson([1, 1, 1, 1], [1, 2, 3, 4])["r"] is None
    assert pearson([1, 2], [1, 2])["r"] is None


def test_peak_trough_known_sequence():
    steps = np.arange(0, 4001, 200)
    # peaks at 800 and 2400 (prominent), a 0.02 wiggle at 3400 (below prominence)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.4, 0.3, 0.2, 0.1, 0.2, 0.3, 0.5, 0.7, 0.5, 0.3, 0.2, 0.21, 0.22, 0.21, 0.2, 0.19])
    pk, tr = detect_extrema(p, prominence=0.03, k=3)
    assert steps[pk].tolist() == [800, 2400] and steps[tr].tolist() == [1600]
    sp = switch_pairs(steps, p, pk, tr, sigma=0.1)
    assert sp == [{"peak": 800, "trough": 1600, "delta_p": pytest.approx(0.5), "tier": "A"}]
    pk2, _ = detect_extrema(p, prominence=0.01, k=3)
    assert 3400 in steps[pk2].tolist()


def test_update_alignment_and_switching_match_dense():
    rng = np.random.default_rng(3)
    T, D = 16, 700
    X = np.cumsum(rng.standard_normal((T, D)), axis=0) + np.outer(np.arange(T) ** 1.2, rng.standard_normal(D))
    X[0] = 0
    steps = np.arange(T) * 200
    g = gram_from_matrix(X, steps)
    pr = pca_rows(g, coeff_rows(T, np.arange(1, T), 0), row_normalise=False, n_dirs=6)
    dec = decompose(g, pr.v1, steps, 0)
    vb = X.T @ dec.coeffs
    assert np.linalg.norm(vb) == pytest.approx(1, abs=1e-10)
    res = update_alignment(g, dec.coeffs, lag_pairs(steps, 400), label="end")
    for k, (s0, s1) in enumerate(lag_pairs(steps, 400)):
        u = X[s1 // 200] - X[s0 // 200]
        assert res["cos"][k] == pytest.approx(u @ vb / np.linalg.norm(u), abs=1e-10)
    assert res["step"][0] == 400
    nf = noise_floor_record(3_147_776)
    assert nf["mean_abs_cos"] == noise_floor(3_147_776) == pytest.approx(4.5e-4, abs=0.05e-4)
    # switching: dense recomputation
    basis = pr.dirs.copy()
    basis[:, 0] = dec.coeffs
    pairs = [(1000, 1400), (2000, 2600), (2400, 2800)]
    sw = switching_geometry(g, pairs, dec.coeffs, basis, top_k=6, analysed_steps=steps)
    V = X.T @ basis
    for rec, (p, t) in zip(sw["pairs"], pairs):
        d = X[p // 200] - X[t // 200]
        vs = d / np.linalg.norm(d)
        assert rec["norm"] == pytest.approx(np.linalg.norm(d), rel=1e-10)
        assert rec["backbone_cos"] == pytest.approx(vs @ vb, abs=1e-10)
        perp = vs - (vs @ vb) * vb
        perp /= np.linalg.norm(perp)
        assert rec["E_2_k"] == pytest.approx(np.sum((perp @ V[:, 1:6]) ** 2), abs=1e-9)
    assert np.allclose(np.diag(sw["pairwise_cos"]), 1)
    assert "same_regime_baseline" in sw["dimensionality"]


def test_switching_dimensionality_vs_baselines():
    """Switching displacements confined to a 2-D plane (+ small noise): PR ≈ 2 < random ≈ m."""
    rng = np.random.default_rng(5)
    D, T = 2000, 41
    steps = np.arange(T) * 200
    drift = np.outer(np.arange(T), rng.standard_normal(D)) * 0.5
    plane = np.linalg.qr(rng.standard_normal((D, 2)))[0]
    osc = np.array([np.cos(0.7 * i) * 3 * plane[:, 0] + np.sin(0.7 * i) * 3 * plane[:, 1] for i in range(T)])
    X = drift + osc + 0.01 * rng.standard_normal((T, D))
    X -= X[0]
    g = gram_from_matrix(X, steps)
    pairs = [(int(steps[i]), int(steps[i + 2])) for i in range(2, 30, 3)]
    # remove the common drift so the switch vectors live in the oscillation plane
    c_drift = np.zeros(T)
    c_drift[-1] = 1
    sw = switching_geometry(g, pairs, c_drift, None, analysed_steps=steps)
    dm = sw["dimensionality"]
    m = len(pairs)
    assert dm["random_baseline_participation_ratio"] == pytest.approx(m, rel=1e-2)
    assert dm["switch"]["participation_ratio"] < 0.5 * m
    assert len(dm["switch"]["gs_residuals"]) == m and dm["switch"]["gs_residuals"][0] == 1.0


def test_window_geometry_dense_and_matched_step():
    rng = np.random.default_rng(2)
    X = np.cumsum(rng.standard_normal((12, 500)), axis=0)
    steps = np.arange(12) * 100
    g = gram_from_matrix(X, steps)
    wg = window_geometry(g, [200, 300, 400, 500, 600, 700, 800, 900])
    Y = X[3:10] - X[2]
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    s = np.linalg.svd(Y, compute_uv=False)
    assert wg["pc1_pct"] == pytest.approx(100 * s[0] ** 2 / np.sum(s**2), rel=1e-10)
    assert wg["drift"] == pytest.approx(np.linalg.norm(X[9] - X[2]), rel=1e-10)
    assert wg["n_rows"] == 7 and "stability_mean" in wg
    assert matched_step([200, 400, 600], [3.0, 2.0, 1.5], 1.9) == 400


def test_reheating_projection(tmp_path):
    rng = np.random.default_rng(4)
    D = 600
    v = rng.standard_normal(D)
    v /= np.linalg.norm(v)
    th0 = rng.standard_normal(D)
    src_steps = np.arange(0, 2001, 200)
    src = [th0 + (s / 200) * 2 * v + 0.05 * rng.standard_normal(D) * (s > 0) for s in src_steps]
    w = TrajectoryWriter(tmp_path / "src" / "trajectory")
    for s, th in zip(src_steps, src):
        w.append(int(s), {"blocks.0.attn.qkv.weight": th.astype(np.float32)})
    # reheating: starts at the source's final weights, then moves orthogonally to v
    orth = rng.standard_normal(D)
    orth -= (orth @ v) * v
    orth /= np.linalg.norm(orth)
    h_steps = [0, 100, 200, 300]
    wh = TrajectoryWriter(tmp_path / "reheat" / "trajectory")
    for k, s in enumerate(h_steps):
        wh.append(s, {"blocks.0.attn.qkv.weight": (src[-1] + k * 0.5 * orth).astype(np.float32)})
    res = reheating_projection(tmp_path / "src", tmp_path / "reheat")
    assert res["steps"] == h_steps and res["source_anchor_step"] == 0
    assert res["a"][0] == pytest.approx(res["source_a_final"], rel=1e-6)
    # dense check with the reconstructed source backbone
    S = np.array([np.asarray(x, dtype=np.float32).astype(np.float64) for x in src])
    Xs = S[1:] - S[0]
    Xn = Xs / np.linalg.norm(Xs, axis=1, keepdims=True)
    vb = np.linalg.svd(Xn, full_matrices=False)[2][0]
    vb = vb if Xs[-1] @ vb > 0 else -vb
    for k in range(len(h_steps)):
        y = (src[-1] + k * 0.5 * orth).astype(np.float32).astype(np.float64) - S[0]
        assert res["a"][k] == pytest.approx(y @ vb, rel=1e-8)
        assert res["norm_r"][k] == pytest.approx(np.sqrt(y @ y - (y @ vb) ** 2), rel=1e-6)
    assert res["max_abs_a_rel_change"] < 0.01  # orthogonal motion leaves a(t) unchanged


def test_joint_stream_requires_same_layout(tmp_path):
    from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader

    TrajectoryWriter(tmp_path / "a").append(0, {"x": np.zeros(4, np.float32)})
    TrajectoryWriter(tmp_path / "b").append(0, {"y": np.zeros(4, np.float32)})
    with pytest.raises(TrajectoryError, match="layout differs"):
        stream_grams([TrajectoryReader(tmp_path / "a"), TrajectoryReader(tmp_path / "b")], {"all": [slice(0, 4)]})


def test_window_backbone_variant3():
    from backbone_lab.analysis.windows import window_backbone

    X, steps, e1, u, phi = rotating(noise=1e-6)
    g = gram_from_matrix(X, steps)
    c = window_backbone(g, [int(s) for s in steps[:11]])  # early phase: direction e1
    assert (X.T @ c) @ e1 == pytest.approx(1, abs=1e-6)
    res = update_alignment(g, c, [(5000, 5200), (600, 800)], label="start")
    assert res["cos"][0] == pytest.approx(np.cos(phi), abs=1e-4) and res["cos"][1] == pytest.approx(1, abs=1e-6)
