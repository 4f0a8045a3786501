"""A real tiny training run end to end: loss, snapshots, analysis, resume, run-dir safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backbone_lab.errors import RunDirError
from backbone_lab.metrics_csv import read_rows
from backbone_lab.run_markers import read_marker
from backbone_lab.train import train
from conftest import TINY_OVERRIDES, compose_config

EXPECTED_STEPS = [0, 1, 5, 10, 15, 20, 25, 30]


def _cfg(tmp_path, name, extra=()):
    return compose_config(
        TINY_OVERRIDES + [f"run_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = _cfg(tmp, "run")
    result = train(cfg)
    return tmp, tmp / "run", result


def test_tiny_run_trains_and_dumps_snapshots(finished_run):
    from backbone_lab.trajectory.store import TrajectoryReader

    _, run_dir, result = finished_run
    assert result["status"] == "done"
    rows = read_rows(run_dir / "eval_metrics.csv")
    assert [r["step"] for r in rows] == [1, 10, 20, 30]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5  # it learns
    for r in rows:
        assert 0.0 <= r["p_in"] <= 1.0 and 0.0 <= r["p_ood"] <= 1.0
    reader = TrajectoryReader(run_dir / "trajectory")
    assert list(reader.steps) == EXPECTED_STEPS
    assert reader.names[0] == "blocks.0.attn.qkv.weight"
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "codewords.json").exists() and (run_dir / "config.yaml").exists()
    marker, payload = read_marker(run_dir)
    assert marker == "DONE" and payload["steps_done"] == 30


def test_summary_matches_independent_numpy_recomputation(finished_run):
    from backbone_lab.trajectory.store import TrajectoryReader

    _, run_dir, _ = finished_run
    summary = json.loads((run_dir / "analysis" / "summary.json").read_text())
    reader = TrajectoryReader(run_dir / "trajectory")
    steps = summary["steps"]  # the analysed steps (uniform cadence), anchor first
    assert steps[0] == 0 and steps[-1] == 30
    theta = np.stack([reader.load(s).astype(np.float64) for s in steps])
    X = theta[1:] - theta[0]  # drift from the step-0 snapshot (default anchor)
    s_raw = np.linalg.svd(X, compute_uv=False)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    _, s_row, vt = np.linalg.svd(Xn, full_matrices=False)
    v_b = vt[0] * np.sign(X[-1] @ vt[0])  # sign convention a(final) > 0
    a = X @ v_b
    r = np.linalg.norm(X - np.outer(a, v_b), axis=1)
    pca, dec = summary["pca"], summary["decomposition"]
    assert 100 * s_raw[0] ** 2 / np.sum(s_raw**2) == pytest.approx(pca["raw"]["pc1_pct"], abs=1e-7)
    assert 100 * s_row[0] ** 2 / np.sum(s_row**2) == pytest.approx(pca["rownorm"]["pc1_pct"], abs=1e-7)
    assert a[-1] == pytest.approx(dec["a_final"], rel=1e-6) and dec["a_final"] > 0
    assert np.linalg.norm(X[-1]) == pytest.approx(dec["norm_delta_final"], rel=1e-6)
    assert r[-1] == pytest.approx(dec["norm_r_final"], rel=1e-5)
    assert a[-1] ** 2 / np.linalg.norm(X[-1]) ** 2 == pytest.approx(dec["backbone_frac_final"], abs=1e-6)
    assert np.mean(a**2 / np.sum(X**2, axis=1)) == pytest.approx(dec["backbone_frac_mean"], abs=1e-6)
    assert list((run_dir / "analysis").glob("*.png")) and (run_dir / "analysis" / "report.md").exists()


def test_resume_after_crash_gives_identical_snapshots(finished_run):
    from backbone_lab.trajectory.store import TrajectoryReader

    tmp, reference_dir, _ = finished_run
    crash = ["+callbacks.crash._target_=crash_callback.CrashAtStep", "+callbacks.crash.step=17"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(tmp, "resumed", crash))
    run_dir = tmp / "resumed"
    assert read_marker(run_dir)[0] == "FAILED"
    partial = TrajectoryReader(run_dir / "trajectory")
    assert list(partial.steps) == [0, 1, 5, 10, 15]  # nothing written is lost
    with pytest.raises(RunDirError, match="resume=auto"):
        train(_cfg(tmp, "resumed"))
    result = train(_cfg(tmp, "resumed", ["resume=auto"]))
    assert result["status"] == "done"
    ref, got = TrajectoryReader(reference_dir / "trajectory"), TrajectoryReader(run_dir / "trajectory")
    assert list(got.steps) == EXPECTED_STEPS
    for step in EXPECTED_STEPS:
        np.testing.assert_array_equal(got.load(step), ref.load(step), err_msg=f"step {step}")


def test_run_dir_holding_a_different_run_is_refused(finished_run):
    tmp, _, _ = finished_run
    with pytest.raises(RunDirError, match="different run"):
        train(_cfg(tmp, "run", ["optimizer.lr=0.01"]))


def test_trajectory_is_identical_for_any_number_of_workers(finished_run):
    """Same config + seed -> same data, init and trajectory with 0 or 2 DataLoader workers
    (the first 10 steps of the reference run: same lr schedule, total 30 steps)."""
    from backbone_lab.trajectory.store import TrajectoryReader

    tmp, reference_dir, _ = finished_run
    train(_cfg(tmp, "workers2", ["data.num_workers=2", "train.max_steps=10", "schedule.total=30", "analyze=false"]))
    ref, got = TrajectoryReader(reference_dir / "trajectory"), TrajectoryReader(tmp / "workers2" / "trajectory")
    assert list(got.steps) == [0, 1, 5, 10]
    for step in got.steps:
        np.testing.assert_array_equal(got.load(step), ref.load(step), err_msg=f"step {step}")


def test_execution_record_written(finished_run):
    import torch

    from backbone_lab.run_dir import RunDir

    _, run_dir, _ = finished_run
    rec = json.loads(RunDir(run_dir).execution.read_text())
    assert rec["torch_threads"] == torch.get_num_threads() and rec["torch_version"] == torch.__version__
    assert rec["accelerator"] == "cpu" and rec["device"] == "cpu" and rec["world_size"] == 1
    assert rec["precision"] and isinstance(rec["deterministic"], bool) and rec["python_version"].count(".") == 2
