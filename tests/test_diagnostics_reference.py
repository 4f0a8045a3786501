"""Reference directions (rolling / global backbone, fixed files) and the diagnostics CSV records."""

from __future__ import annotations

import numpy as np
import pytest

from backbone_lab.diagnostics import reference_direction as rd
from backbone_lab.analysis.diagnostic_records import RecordWriter, read_records
from backbone_lab.trajectory.store import TrajectoryReader, TrajectoryWriter

SHAPES = {"blocks.0.attn.qkv.weight": (6, 4), "blocks.0.mlp.w_up.weight": (5, 4)}
D = 44


def _write_traj(path, thetas: dict[int, np.ndarray]) -> TrajectoryReader:
    w = TrajectoryWriter(path)
    for step, th in thetas.items():
        named, off = {}, 0
        for name, shape in SHAPES.items():
            n = int(np.prod(shape))
            named[name] = th[off : off + n].reshape(shape).astype(np.float32)
            off += n
        w.append(step, named)
    return TrajectoryReader(path)


def _planted(seed=0, steps=range(0, 220, 20), noise=0.02):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(D)
    v /= np.linalg.norm(v)
    theta0 = rng.standard_normal(D)
    thetas = {s: theta0 + (s / 20.0) * v + noise * rng.standard_normal(D) for s in steps}
    return v, thetas


def _dense_pcs(thetas, steps, anchor, row_normalise):
    X = np.stack([thetas[s].astype(np.float32).astype(np.float64) - thetas[anchor].astype(np.float32).astype(np.float64)
                  for s in steps])
    if row_normalise:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    return vt, s**2 / np.sum(s**2), X


def test_rolling_backbone_recovers_planted_direction(tmp_path):
    v, thetas = _planted()
    reader = _write_traj(tmp_path / "trajectory", thetas)
    ref = rd.rolling_backbone(reader, window=5, upto_step=150)
    assert ref.steps == [80, 100, 120, 140] and ref.anchor_step == 60  # last 5 snapshots <= 150
    assert abs(float(ref.backbone @ v)) > 0.99
    assert float(ref.backbone @ v) > 0  # sign: latest drift has a positive projection
    assert np.linalg.norm(ref.backbone) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(ref.pc2 @ ref.backbone)) < 1e-5
    # equals a dense SVD of the re-anchored, row-normalised drifts
    vt, expl, X = _dense_pcs(thetas, [80, 100, 120, 140], 60, True)
    v1 = vt[0] * np.sign(X[-1] @ vt[0])
    assert np.allclose(ref.backbone, v1, atol=1e-5)
    assert np.allclose(ref.explained, expl, atol=1e-8)
    # too few snapshots -> None
    assert rd.rolling_backbone(reader, window=5, upto_step=20, min_snapshots=3) is None


def test_global_backbone_raw_matches_dense_svd(tmp_path):
    v, thetas = _planted(seed=1, noise=0.3)
    reader = _write_traj(tmp_path / "trajectory", thetas)
    ref = rd.global_backbone(reader, anchor_step=20, row_normalise=False)
    rows = [s for s in sorted(thetas) if s > 20]
    vt, expl, X = _dense_pcs(thetas, rows, 20, False)
    assert ref.steps == rows and ref.anchor_step == 20
    assert np.allclose(ref.backbone, vt[0] * np.sign(X[-1] @ vt[0]), atol=1e-5)
    assert np.allclose(np.abs(ref.pc2), np.abs(vt[1]), atol=1e-4)
    assert np.allclose(ref.explained, expl, atol=1e-8)
    sw = rd.switching_direction(reader, 200, 100)
    d = thetas[200].astype(np.float32) - thetas[100].astype(np.float32)
    assert np.allclose(sw, d / np.linalg.norm(d), atol=1e-6)


def test_provider_kinds_and_file_loading(tmp_path):
    v, thetas = _planted()
    run = tmp_path / "run"
    _write_traj(run / "trajectory", thetas)
    p = rd.ReferenceProvider(rd.ReferenceConfig.from_any({"kind": "rolling", "window": 4}), run, D)
    assert p.get(100).steps == [60, 80, 100]
    np.save(tmp_path / "vb.npy", 3.0 * v)
    pf = rd.ReferenceProvider(rd.ReferenceConfig.from_any({"kind": "file", "path": str(tmp_path / "vb.npy")}), run, D)
    assert np.allclose(pf.get(0).backbone, v, atol=1e-6)
    np.savez(tmp_path / "vb.npz", v_b=v, names=np.array(list(SHAPES)))
    assert np.allclose(rd.load_direction(tmp_path / "vb.npz", D, names=list(SHAPES)), v, atol=1e-6)
    with pytest.raises(ValueError, match="W8"):
        rd.load_direction(tmp_path / "vb.npz", D, names=list(reversed(SHAPES)))
    with pytest.raises(ValueError, match="entries"):
        rd.load_direction(tmp_path / "vb.npy", D + 1)
    with pytest.raises(ValueError, match="unknown keys"):
        rd.ReferenceConfig.from_any({"kind": "rolling", "windw": 3})
    # no trajectory yet -> None, not an error
    assert rd.ReferenceProvider(rd.ReferenceConfig(), tmp_path / "empty", D).get(10) is None


def test_records_append_flush_and_dedup(tmp_path):
    path = tmp_path / "diagnostics" / "x.csv"
    w = RecordWriter(path, ["step", "cos", "ref_source"])
    w.append({"step": 10, "cos": 0.5, "ref_source": "rolling(W=10)"})
    w.append({"step": 20, "cos": np.float64("nan"), "ref_source": "r"})
    w.append({"step": 30, "cos": np.float64(0.25), "ref_source": "r"})
    assert path.read_text().count("\n") == 4  # header + 3 rows, on disk already
    assert "np.float64" not in path.read_text()
    w2 = RecordWriter(path, ["step", "other"])  # resume: the existing header wins
    assert w2.columns == ["step", "cos", "ref_source"]
    with pytest.warns(UserWarning):
        w2.append({"step": 10, "cos": 0.7, "extra": 1})
    r = read_records(path)
    assert list(r["step"]) == [10, 20, 30] and r["cos"][0] == 0.7 and np.isnan(r["cos"][1])
    assert r["cos"][2] == 0.25
    assert read_records(tmp_path / "missing.csv") == {}


def test_offline_step_and_delta_selection():
    from backbone_lab.diagnostics.offline import auto_delta, auto_steps

    stored = [0, 1] + list(range(25, 1001, 25))
    assert auto_delta(stored) == 200
    assert auto_delta([0, 1, 5, 10, 15, 20]) == 5
    sel = auto_steps(stored, 8)
    assert len(sel) == 8 and sel[0] == 1 and sel[-1] == 1000 and sel == sorted(sel)
    assert auto_steps(stored, None) == [s for s in stored if s >= 1]
