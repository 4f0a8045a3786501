"""Sketched snapshots (backbone_lab.series.sketch): the sparse JL sketch of each block estimates the
drift Gram within its stated bound, and the analysis numbers from a sketched series match the dense
ones (PC1 within 1 point, k95 equal, rho within 0.02) at the recommended k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.gram import gram_from_matrix
from backbone_lab.series.cli import SeriesOptions, analyse_series
from backbone_lab.series.sketch import RECOMMENDED_K, BlockSketcher, SketchSpec, jl_epsilon, k_for_epsilon, rms_bound, sketch_add_numpy, tensor_keys

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _sketch(x: np.ndarray, spec: SketchSpec, name: str = "w") -> np.ndarray:
    y = np.zeros(spec.k)
    sketch_add_numpy(y, x, 0, tensor_keys(spec.seed, name, spec.nnz), spec)
    return y


def test_sketch_is_linear_unbiased_and_within_its_rms_bound():
    rng = np.random.default_rng(0)
    D, k = 20_000, 256
    x, y = rng.standard_normal(D), rng.standard_normal(D)
    y = 0.6 * x + 0.8 * y  # <x, y> / (|x||y|) about 0.6
    spec = SketchSpec(k, seed=1)
    # linear: S(x - y) = Sx - Sy (drift sketches are differences of snapshot sketches)
    np.testing.assert_allclose(_sketch(x - y, spec), _sketch(x, spec) - _sketch(y, spec), atol=1e-9)
    errs = []
    for seed in range(60):
        s = SketchSpec(k, seed=seed)
        errs.append((_sketch(x, s) @ _sketch(y, s) - x @ y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    errs = np.array(errs)
    assert abs(errs.mean()) < 3 * rms_bound(k) / math.sqrt(len(errs))  # unbiased
    assert 0.3 * rms_bound(k) < errs.std() < rms_bound(k)  # a real random error, below sqrt(2/k)


def test_the_sketch_is_not_the_identity_and_depends_on_the_seed():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10_000)
    a, b = _sketch(x, SketchSpec(512, seed=0)), _sketch(x, SketchSpec(512, seed=0))
    c = _sketch(x, SketchSpec(512, seed=7))
    np.testing.assert_array_equal(a, b)  # deterministic in the seed
    assert a.shape == (512,)
    assert np.corrcoef(a, c)[0, 1] < 0.2  # another seed: another projection
    assert abs(a @ a - x @ x) > 1e-6 * (x @ x)  # not an isometry copy of x
    assert abs(a @ a - x @ x) < 5 * rms_bound(512) * (x @ x)
    # each coordinate goes to nnz buckets with signs: a unit vector sketches to nnz entries of 1/sqrt(nnz)
    e = np.zeros(10_000)
    e[1234] = 1.0
    s = _sketch(e, SketchSpec(512, seed=3, nnz=4))
    assert np.count_nonzero(s) == 4 and np.allclose(np.abs(s[s != 0]), 0.5)


def test_torch_and_numpy_sketches_are_identical():
    torch = pytest.importorskip("torch")
    from backbone_lab.series.sketch import sketch_add_torch

    rng = np.random.default_rng(2)
    x = rng.standard_normal(5000).astype(np.float32)
    spec = SketchSpec(128, seed=11)
    keys = tensor_keys(spec.seed, "blocks.0.attn.qkv.weight", spec.nnz)
    y_np = np.zeros(128)
    sketch_add_numpy(y_np, x[:3000], 0, keys, spec)
    sketch_add_numpy(y_np, x[3000:], 3000, keys, spec)  # chunked = whole
    y_t = torch.zeros(128, dtype=torch.float64)
    sketch_add_torch(y_t, torch.from_numpy(x), 0, keys, spec)
    np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-12, atol=1e-12)


def test_bound_helpers():
    assert k_for_epsilon(jl_epsilon(4096, 51), 51) <= 4096
    assert jl_epsilon(4 * 4096, 51) == pytest.approx(jl_epsilon(4096, 51) / 2)
    with pytest.raises(ValueError, match="multiple"):
        SketchSpec(10, nnz=4)


def planted_series(root, T=41, blocks=4, d=40_000, seed=0):
    """A trajectory with a slowly rotating backbone plus a small transverse walk, written as Pythia-style
    step<N>/model.safetensors folders with GPT-NeoX trunk names."""
    rng = np.random.default_rng(seed)
    D = blocks * d
    v1, v2 = rng.standard_normal(D), rng.standard_normal(D)
    v1 /= np.linalg.norm(v1)
    v2 -= (v2 @ v1) * v1
    v2 /= np.linalg.norm(v2)
    theta0 = rng.standard_normal(D) * 0.5
    walk = np.cumsum(rng.standard_normal((T, D)) * 0.004, axis=0)
    rows = []
    for t in range(T):
        phi = 0.6 * t / T
        rows.append(theta0 + (t / T) ** 0.8 * (np.cos(phi) * v1 + np.sin(phi) * v2) * 3.0 + walk[t])
    rows = np.array(rows, dtype=np.float32)
    for t in range(T):
        folder = root / f"step{t * 10}"
        folder.mkdir(parents=True)
        tensors = {f"gpt_neox.layers.{b}.attention.dense.weight": rows[t, b * d:(b + 1) * d].reshape(200, d // 200) for b in range(blocks)}
        tensors["gpt_neox.embed_in.weight"] = np.zeros((8, 4), dtype=np.float32)
        safetensors_numpy.save_file(tensors, str(folder / "model.safetensors"))
    return rows


def _cfg(out):
    return AnalysisConfig(out_dir=str(out), figures=False, report=True, progress=False, rolling_window=8)


def test_sketched_analysis_matches_dense_on_a_planted_trajectory(tmp_path):
    rows = planted_series(tmp_path / "series")
    dense = analyse_series(str(tmp_path / "series"), SeriesOptions(trunk="gpt_neox"), _cfg(tmp_path / "dense"))
    # the dense series Gram is the Gram of the planted rows (the embedding is not trunk)
    G = gram_from_matrix(rows.astype(np.float64)).G
    got = np.load(tmp_path / "dense" / "grams.npz")["G_trunk"]
    np.testing.assert_allclose(got, G, rtol=1e-10, atol=1e-10 * G.max())
    results = {}
    for seed in (0, 1):
        out = tmp_path / f"sk{seed}"
        s = analyse_series(str(tmp_path / "series"), SeriesOptions(trunk="gpt_neox", sketch_dim=RECOMMENDED_K, sketch_seed=seed), _cfg(out))
        results[seed] = s
        assert s["sketch"]["k"] == RECOMMENDED_K and s["sketch"]["seed"] == seed and s["sketch"]["sketched"]
        assert "switching" in s["sketch"]["needs_dense_snapshots"]
        assert "needs dense snapshots" in (out / "report.md").read_text()
        assert s["dim"] == 4 * RECOMMENDED_K
        assert abs(s["pca"]["rownorm"]["pc1_pct"] - dense["pca"]["rownorm"]["pc1_pct"]) <= 1.0
        assert abs(s["pca"]["raw"]["pc1_pct"] - dense["pca"]["raw"]["pc1_pct"]) <= 1.0
        assert s["pca"]["rownorm"]["k95"] == dense["pca"]["rownorm"]["k95"]
        assert s["pca"]["raw"]["k95"] == dense["pca"]["raw"]["k95"]
        assert abs(s["rolling"]["rho_mean"] - dense["rolling"]["rho_mean"]) <= 0.02
        assert abs(s["rolling"]["rho_min"] - dense["rolling"]["rho_min"]) <= 0.02
        Gs = np.load(out / "grams.npz")["G_trunk"]
        rel = np.abs(Gs - G) / np.sqrt(np.outer(np.diag(G), np.diag(G)) + 1e-300)
        rel[0, :] = rel[:, 0] = 0
        assert rel.max() <= s["sketch"]["jl_epsilon"]  # the stated bound holds
        assert rel.max() > 1e-6  # and the sketch is a sketch (the identity would give 0)
    g0, g1 = (np.load(tmp_path / f"sk{s}" / "grams.npz")["G_trunk"] for s in (0, 1))
    assert not np.allclose(g0, g1, rtol=1e-6)  # the seed is used
    assert results[0]["pca"]["rownorm"]["pc1_pct"] != results[1]["pca"]["rownorm"]["pc1_pct"]


def test_block_sketcher_layout():
    sk = BlockSketcher(SketchSpec(64), [{"name": "a", "block": 1}, {"name": "b", "block": 0}, {"name": "c", "block": 1}])
    assert [t["name"] for t in sk.sketch_layout()] == ["sketch.block0", "sketch.block1"]
    assert all(t["shape"] == [64] and t["trunk"] for t in sk.sketch_layout())


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny model trained twice with the same seed: dense snapshots, and sketched ones."""
    pytest.importorskip("torch")
    from conftest import compose_config

    from backbone_lab.train import train

    tmp = tmp_path_factory.mktemp("sketch_runs")
    common = ["debug=tiny", f"paths.cache_dir={tmp / 'cache'}", "snapshots.every=2"]
    assert train(compose_config([*common, f"run_dir={tmp / 'dense'}"]))["status"] == "done"
    assert train(compose_config([*common, f"run_dir={tmp / 'sketch'}", f"snapshots.sketch_dim={RECOMMENDED_K}",
                                 "snapshots.sketch_seed=3"]))["status"] == "done"
    return tmp


@pytest.mark.slow
def test_training_with_sketched_snapshots_gives_the_dense_numbers(tiny_runs):
    from backbone_lab.analysis.run_analysis import run_analysis
    from backbone_lab.trajectory.store import TrajectoryReader

    sk = TrajectoryReader(tiny_runs / "sketch")
    dense = TrajectoryReader(tiny_runs / "dense")
    assert sk.steps == dense.steps and sk.meta["sketch"]["k"] == RECOMMENDED_K and sk.meta["sketch"]["seed"] == 3
    assert sk.names == [f"sketch.block{b}" for b in dense.blocks]
    assert not sk.load(sk.steps[0]).any()  # drift from the first snapshot
    d = run_analysis(tiny_runs / "dense", AnalysisConfig(figures=False, progress=False))
    s = run_analysis(tiny_runs / "sketch", AnalysisConfig(figures=False, progress=False))
    assert s["sketch"]["sketched"] and "backbone_file" in s["sketch"]["needs_dense_snapshots"]
    assert abs(s["pca"]["rownorm"]["pc1_pct"] - d["pca"]["rownorm"]["pc1_pct"]) <= 1.0
    assert s["pca"]["rownorm"]["k95"] == d["pca"]["rownorm"]["k95"]
    if d.get("rolling", {}).get("rho_mean") is not None:
        assert abs(s["rolling"]["rho_mean"] - d["rolling"]["rho_mean"]) <= 0.02
    Gd = np.load(tiny_runs / "dense" / "analysis" / "grams.npz")["G_trunk"]
    Gs = np.load(tiny_runs / "sketch" / "analysis" / "grams.npz")["G_trunk"]
    scale = np.sqrt(np.outer(np.diag(Gd), np.diag(Gd))) + 1e-300
    assert 0 < np.max(np.abs(Gs - Gd) / scale) <= s["sketch"]["jl_epsilon"]
    # the sketch file is tiny next to the dense one
    assert sk.dim * 50 < dense.dim or sk.dim == len(dense.blocks) * RECOMMENDED_K


def test_sketching_writer_resumes_with_the_same_origin(tmp_path):
    from backbone_lab.trajectory.sketch_writer import SketchingWriter
    from backbone_lab.trajectory.store import TrajectoryReader

    rng = np.random.default_rng(5)
    layout = [{"name": "blocks.0.w", "shape": [50, 40], "block": 0, "trunk": True},
              {"name": "blocks.1.w", "shape": [30, 40], "block": 1, "trunk": True}]
    snaps = {s: {t["name"]: rng.standard_normal(t["shape"]).astype(np.float32) for t in layout} for s in (0, 5, 10)}
    spec = SketchSpec(64, seed=2)
    one = SketchingWriter(tmp_path / "one", spec, layout)
    for s in (0, 5, 10):
        one.append(s, snaps[s])
    two = SketchingWriter(tmp_path / "two", spec, layout)
    two.append(0, snaps[0])
    two.append(5, snaps[5])
    del two  # a resumed run: a new writer on the same folder
    SketchingWriter(tmp_path / "two", spec, layout).append(10, snaps[10])
    a, b = TrajectoryReader(tmp_path / "one"), TrajectoryReader(tmp_path / "two")
    for s in (0, 5, 10):
        np.testing.assert_array_equal(a.load(s), b.load(s))
    # the stored rows are the sketches of the drifts
    sk = BlockSketcher(spec, layout)
    Y = sk.zeros_numpy()
    for n in snaps[10]:
        sk.add_numpy(Y, n, (snaps[10][n].astype(np.float64) - snaps[0][n]).reshape(-1))
    np.testing.assert_allclose(a.load(10), Y.reshape(-1), rtol=1e-5, atol=1e-5)
    assert a.meta["sketch"]["k"] == 64 and a.names == ["sketch.block0", "sketch.block1"]
