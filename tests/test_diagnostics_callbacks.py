"""The diagnostics callbacks in a real tiny training run (lead's `train` + `BackboneLitModule`),
their resume behaviour, the offline path and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backbone_lab.diagnostics.records import read_records
from backbone_lab.train import train
from conftest import TINY_OVERRIDES, compose_config

DIAG = [
    "callbacks=[grad_alignment,update_alignment,fisher]",
    "callbacks.grad_alignment.every_n_steps=5",
    "callbacks.grad_alignment.split_losses=true",
    "callbacks.grad_alignment.reference.window=4",
    "callbacks.update_alignment.delta=10",
    "callbacks.update_alignment.reference.window=4",
    "callbacks.fisher.every_n_steps=10",
    "callbacks.fisher.n_samples=4",
    "callbacks.fisher.minibatch_batches=2",
    "callbacks.fisher.minibatch_size=2",
    "callbacks.fisher.n_random=3",
    "callbacks.fisher.per_sample_method=jvp",
    "callbacks.fisher.switching.steps=[10,5]",
    "callbacks.fisher.reference.window=4",
    "analyze=false",
    "train.max_steps=20",  # 20 steps: snapshots 0, 1, 5, 10, 15, 20; evaluations at 1 and 20
    "train.eval_every=20",
]


def _cfg(tmp, name, extra=()):
    base = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "logger="))]
    return compose_config(base + [f"run_dir={tmp / name}", f"paths.cache_dir={tmp / 'cache'}", *DIAG, *extra])


@pytest.fixture(scope="module")
def diag_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diag")
    result = train(_cfg(tmp, "run", ["logger=csv"]))
    assert result["status"] == "done"
    return tmp, tmp / "run"


def test_csvs_and_logged_metrics(diag_run):
    _, run = diag_run
    d = run / "diagnostics"
    g = read_records(d / "grad_alignment.csv")
    # step 5 has only snapshots 0, 1 (< min_snapshots=3) before it: no reference yet
    assert list(g["step"]) == [10, 15, 20]
    assert np.all(g["ref_step"] <= g["step"] - 1)
    assert np.all((g["abs_cos"] >= 0) & (g["abs_cos"] <= 1))
    assert np.allclose(g["abs_cos"] ** 2 + g["perp_frac"] ** 2, 1.0)
    assert np.allclose(g["noise_floor"], np.sqrt(2 / (np.pi * g["D"])))
    assert np.all(g["seconds"] >= 0)
    assert np.isfinite(g["lm_cos"]).all()
    u = read_records(d / "update_alignment.csv")
    assert list(u["step"]) == [10, 20]
    summ = json.loads((d / "update_alignment_summary.json").read_text())
    assert summ["n_points"] == 2 and "sign_flip_step" in summ
    for est in ("per_sample", "minibatch"):
        f = read_records(d / f"fisher_{est}.csv")
        assert list(f["step"]) == [10, 20]
        assert np.all(f["q_backbone"] > 0) and np.all(f["q_random_mean"] > 0)
        assert np.allclose(f["anisotropy"], f["q_backbone"] / f["q_random_mean"])
        assert np.isfinite(f["q_switching"]).all() and np.isfinite(f["q_pc2"]).all()
    logged = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    for key in ("diagnostics/grad_align/abs_cos", "diagnostics/grad_align/noise_floor",
                "diagnostics/update_align/cos", "diagnostics/fisher/per_sample/anisotropy",
                "diagnostics/fisher/minibatch/q_backbone"):
        assert key in logged


def test_update_alignment_matches_store_recomputation(diag_run):
    """cos(θ(20) − θ(10), v_roll) with v_roll = PC1 of the last 4 snapshots ≤ 20, by dense SVD."""
    from backbone_lab.trajectory.store import TrajectoryReader

    _, run = diag_run
    reader = TrajectoryReader(run / "trajectory")
    win = [s for s in reader.steps if s <= 20][-4:]
    th = {s: reader.load(s).astype(np.float64) for s in win + [10]}
    X = np.stack([th[s] - th[win[0]] for s in win[1:]])
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    v = np.linalg.svd(Xn, full_matrices=False)[2][0]
    v *= np.sign(X[-1] @ v)
    du = th[20] - th[10]
    u = read_records(run / "diagnostics" / "update_alignment.csv")
    i = list(u["step"]).index(20)
    assert u["cos"][i] == pytest.approx(du @ v / np.linalg.norm(du), abs=1e-5)
    assert u["ref_step"][i] == 20  # in sample: the reference window contains θ(20), hence u

    def backbone(upto):
        win = [s for s in reader.steps if s <= upto][-4:]
        X = np.stack([reader.load(s).astype(np.float64) - reader.load(win[0]).astype(np.float64) for s in win[1:]])
        vv = np.linalg.svd(X / np.linalg.norm(X, axis=1, keepdims=True), full_matrices=False)[2][0]
        return vv * np.sign(X[-1] @ vv)

    # out of sample: the snapshots ≤ 20 − Δ = 10 only
    assert u["oos_ref_step"][i] == 10
    assert u["oos_cos"][i] == pytest.approx(du @ backbone(10) / np.linalg.norm(du), abs=1e-5)
    assert np.isnan(u["oos_cos"][list(u["step"]).index(10)])  # ≤ 0: one snapshot, no reference yet


def test_offline_fisher_reproduces_online_at_final_step(diag_run):
    """Offline (trunk from the snapshot, the rest from last.ckpt = step 20) = online at step 20."""
    from backbone_lab.diagnostics.offline import run_offline_diagnostics
    from omegaconf import OmegaConf

    _, run = diag_run
    saved = OmegaConf.load(run / "config.yaml")
    cfg = {"steps": [20], "reference": {"kind": "rolling", "window": 4}, "reference_upto": "step",
           "fisher": OmegaConf.to_container(saved.callbacks.fisher), "update_alignment": {"delta": 10},
           "grad_alignment": {"n_batches": 2, "batch_size": 2}}
    out = run_offline_diagnostics(run, cfg)
    for est in ("per_sample", "minibatch"):
        online = read_records(run / "diagnostics" / f"fisher_{est}.csv")
        off = out[f"fisher_{est}"][0]
        assert off["nontrunk_step"] == 20
        i = list(online["step"]).index(20)
        for key in ("q_backbone", "q_pc2", "q_switching", "q_random_mean", "anisotropy"):
            assert off[key] == pytest.approx(online[key][i], rel=1e-4), (est, key)
    on_u = read_records(run / "diagnostics" / "update_alignment.csv")
    off_u = read_records(run / "diagnostics" / "offline" / "update_alignment.csv")
    common = [list(off_u["step"]).index(s) for s in on_u["step"]]  # offline: every stored pair
    assert np.allclose(off_u["cos"][common], on_u["cos"], atol=1e-5)
    g = out["grad_alignment"][0]
    assert 0 <= g["abs_cos"] <= 1 and g["n_batches"] == 2


def test_figures(diag_run, tmp_path):
    from backbone_lab.diagnostics.figures import plot_alignment, plot_fisher

    _, run = diag_run
    assert plot_alignment(run, tmp_path / "fig2.png").stat().st_size > 1000
    assert plot_fisher(run, tmp_path / "fig3.png").stat().st_size > 1000
    assert plot_fisher(tmp_path, tmp_path / "none.png") is None


def test_report_embeds_figs_2_and_3_of_the_recorded_diagnostics(diag_run, tmp_path):
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.analysis.run_analysis import run_analysis

    _, run = diag_run
    out = tmp_path / "analysis"
    summary = run_analysis(run, AnalysisConfig(out_dir=str(out), switching=False, per_block=False))
    assert set(summary["training_diagnostics"]["figures"]) == {"fig2_alignment", "fig3_fisher"}
    report = (out / "report.md").read_text()
    assert "![fig2_alignment](fig2_alignment.png)" in report and (out / "fig3_fisher.png").exists()


def test_resume_continues_cadence_and_csvs(diag_run):
    """Crash at step 13 (last checkpoint: step 10), resume: de-duplicated CSVs equal the
    uninterrupted run's (CPU training is deterministic), incl. the update interval 10→20 whose
    θ(10) copy comes back from the callback state."""
    tmp, ref_run = diag_run
    crash = ["+callbacks.crash._target_=crash_callback.CrashAtStep", "+callbacks.crash.step=13"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(tmp, "resumed", crash))
    train(_cfg(tmp, "resumed", ["resume=auto"]))
    for name in ("grad_alignment", "update_alignment", "fisher_per_sample", "fisher_minibatch"):
        a = read_records(ref_run / "diagnostics" / f"{name}.csv")
        b = read_records(tmp / "resumed" / "diagnostics" / f"{name}.csv")
        assert list(a["step"]) == list(b["step"]), name
        for key in a:
            if a[key].dtype != object and key != "seconds":  # wall time differs
                assert np.allclose(a[key], b[key], rtol=1e-6, atol=1e-9, equal_nan=True), (name, key)
    summ = json.loads((tmp / "resumed" / "diagnostics" / "update_alignment_summary.json").read_text())
    assert summ["n_points"] == 2


def test_diagnostics_use_the_trunk_columns_of_a_store_with_norms(tmp_path):
    """A store that also holds the blocks' norms (the paper experiments' `blocks_with_ln`): the
    reference backbone is built from the trunk columns, in the gradients' coordinates."""
    result = train(_cfg(tmp_path, "ln", ["snapshots.subset=blocks_with_ln"]))
    assert result["status"] == "done"
    g = read_records(tmp_path / "ln" / "diagnostics" / "grad_alignment.csv")
    assert list(g["step"]) == [10, 15, 20] and np.all((g["abs_cos"] >= 0) & (g["abs_cos"] <= 1))
