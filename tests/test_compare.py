"""`backbone_lab.compare` on fabricated run folders: discovery, swept keys, the paper tables
(paper values only where the config matches), redirects, and the written report."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from backbone_lab.compare import compare, discover_runs
from backbone_lab.compare.grouping import label_runs, swept_keys
from backbone_lab.compare.tables import TABLE4, beta2_table, matched_windows_table, reheating_table, sgd_controls_table
from backbone_lab.run_markers import write_marker
from backbone_lab.trajectory.store import TrajectoryWriter

BASE = {
    "model": {"name": "tiny", "n_layer": 2, "d_model": 64},
    "data": {"source": "synthetic", "p_probe": 0.1, "micro_batch_size": 32, "mask_padding": True, "cache_dir": "/x"},
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.5},
    "schedule": {"warmup": 15, "total": 40, "floor": 0.1},
    "objective": {"lambda_schedule": [[0, 2.0]]},
    "train": {"max_steps": 40, "eval_every": 4, "accumulate": 1, "grad_clip": 1.0},
    "snapshots": {"every": 4, "dense": [[8, 20, 2]]},
    "analysis": {"anchor_step": 1},
    "seed": 42, "run_dir": "/somewhere", "run_name": "t", "tags": [], "init_from": None,
    "logger": {}, "callbacks": {},
}
PAPER = {
    **BASE,
    "model": {"name": "paper"},
    "data": {"source": "tinystories", "p_probe": 0.1, "micro_batch_size": 64, "mask_padding": True},
    "schedule": {"warmup": 1500, "total": 4000, "floor": 0.1},
    "train": {"max_steps": 4000, "eval_every": 200, "accumulate": 2, "grad_clip": 1.0},
    "snapshots": {"every": 200, "dense": []},
}


def _merge(base: dict, **over) -> dict:
    cfg = copy.deepcopy(base)
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def make_run(path: Path, cfg: dict, val_end: float = 3.0, p_peak: float = 0.5, drift_dirs: int = 1, seed: int = 0,
             state: str = "DONE", steps_stored=None) -> Path:
    """A run folder as train() + analysis leave it (small, with a real trajectory)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    max_steps = cfg["train"]["max_steps"]
    ev = [1] + list(range(cfg["train"]["eval_every"], max_steps + 1, cfg["train"]["eval_every"]))
    with open(path / "eval_metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_loss", "val_loss", "p_in", "p_ood", "nll_in", "nll_ood", "lm_ood", "r_ood", "lambda", "lr"])
        for s in ev:
            frac = s / max_steps
            w.writerow([s, 0, 6 - (6 - val_end) * frac, 0, p_peak * np.sin(np.pi * frac), 0, 0, 0, 0, 2.0, 1e-3])
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(drift_dirs, 6, 4)).astype(np.float32)
    writer = TrajectoryWriter(path / "trajectory")
    every = cfg["train"]["eval_every"]
    dense = [s for lo, hi, k in cfg["snapshots"]["dense"] for s in range(lo, hi + 1, k)]
    stored = steps_stored or sorted({0, 1, *range(every, max_steps + 1, every), *dense})
    for s in stored:
        coef = [s / max_steps] + [np.sin(s * (k + 1) / 7.0) * 0.3 for k in range(drift_dirs - 1)]
        theta = sum(c * d for c, d in zip(coef, dirs))
        writer.append(s, {"blocks.0.attn.qkv.weight": theta})
    (path / "analysis").mkdir()
    summary = {"pca": {"rownorm": {"pc1_pct": 100.0 / drift_dirs, "k95": drift_dirs}, "raw": {"pc1_pct": 99.0, "k95": 1}},
               "decomposition": {"norm_delta_final": 1.5, "backbone_frac_mean": 0.9},
               "update_alignment": {"fixed_lag": {"mean_abs_cos": 0.2, "mean_abs_cos_early": 0.3, "lag": 4}},
               "correlations": {"by_window": {"0-20": {"r": 0.5}}}, "config": {"early_max_step": 20}, "anchor_step": 1}
    (path / "analysis" / "summary.json").write_text(json.dumps(summary))
    with open(path / "analysis" / "timeseries.csv", "w") as f:
        f.write("step,a_t,norm_r_t\n" + "".join(f"{s},{s / 10},{s / 40}\n" for s in stored))
    with open(path / "analysis" / "rolling.csv", "w") as f:
        f.write("start,end,centre,pc1,rho_next\n10,20,15,0.9,0.8\n20,30,25,0.9,0.7\n")
    if state == "DONE":
        write_marker(path, "DONE", {"status": "done", "final_val_loss": val_end, "train_seconds": 1.0})
    elif state == "DIVERGED":
        write_marker(path, "DONE", {"status": "diverged", "diverged_at_step": 12})
    elif state == "FAILED":
        write_marker(path, "FAILED", {"error": "RuntimeError: boom"})
    return path


def test_swept_keys_and_labels_from_resolved_configs(tmp_path):
    a = make_run(tmp_path / "s" / "0_a", _merge(BASE))
    make_run(tmp_path / "s" / "1_b", _merge(BASE, optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5,
                                                             "momentum": 0.0, "weight_decay": 0.5}))
    make_run(tmp_path / "s" / "2_c", _merge(BASE, seed=7, run_dir="/elsewhere", data__cache_dir="/y"))
    runs = discover_runs([tmp_path / "s"])
    assert len(runs) == 3 and runs[0].run_dir == a
    keys = label_runs(runs)
    assert "seed" in keys and "optimizer._target_" in keys
    assert not any(k.startswith(("run_dir", "data.cache_dir")) for k in keys)  # paths are never "swept"
    assert runs[0].label.startswith("AdamW(lr=0.001)") and runs[1].label.startswith("SGD(lr=0.5)")
    assert runs[0].group == runs[2].group  # differ only in the seed
    assert swept_keys(runs[:1]) == []


def test_a_job_that_failed_before_saving_its_config_does_not_lengthen_every_label(tmp_path):
    """A sweep job that stopped at the early checks has no config.yaml: it must not make every key
    "swept" (the labels then spelled the whole config and no figure could fit them)."""
    make_run(tmp_path / "s" / "0_a", _merge(BASE))
    make_run(tmp_path / "s" / "1_b", _merge(BASE, seed=7))
    failed = tmp_path / "s" / "2_c"
    failed.mkdir(parents=True)
    write_marker(failed, "FAILED", {"error": "ConfigError: optimizer rejected its arguments"})
    runs = discover_runs([tmp_path / "s"])
    assert len(runs) == 3
    assert label_runs(runs) == ["seed"]
    assert [r.label for r in runs] == ["seed=42", "seed=7", "2_c"]


def test_runs_come_in_the_sweeps_job_order(tmp_path):
    """Hydra numbers a sweep's jobs 0, 1, ..., 10, 11: job 2 comes before job 10 (runs, labels,
    seed groups and figures follow this order)."""
    for num in (0, 1, 2, 10, 11):
        make_run(tmp_path / "s" / f"{num}_seed={num}", _merge(BASE, seed=num))
    assert [r.run_dir.name.split("_")[0] for r in discover_runs([tmp_path / "s"])] == ["0", "1", "2", "10", "11"]


def test_redirected_jobs_are_followed_and_loaded_once(tmp_path):
    done = make_run(tmp_path / "old" / "0_x", _merge(BASE))
    job = tmp_path / "new" / "0_x"
    job.mkdir(parents=True)
    (job / ".hydra").mkdir()
    (job / "REDIRECT.json").write_text(json.dumps({"run_dir": str(done), "reason": "done"}))
    runs = discover_runs([tmp_path / "new"])
    assert [r.run_dir for r in runs] == [done] and runs[0].job_dir == job
    assert len(discover_runs([tmp_path / "new", tmp_path / "old"])) == 1


def test_failed_and_diverged_runs_are_reported(tmp_path):
    make_run(tmp_path / "s" / "0_ok", _merge(BASE))
    make_run(tmp_path / "s" / "1_div", _merge(BASE, seed=1), state="DIVERGED")
    make_run(tmp_path / "s" / "2_bad", _merge(BASE, seed=2), state="FAILED")
    info = compare([tmp_path / "s"], tmp_path / "out", plots=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "runs.csv")))
    assert [r["state"] for r in rows] == ["done", "diverged@12", "failed"]
    assert "boom" in rows[2]["error"]
    assert info["n_runs"] == 3


def _sgd_runs(tmp_path, base):
    arms = {
        "adamw": (base["optimizer"], 3.0, 2),
        "sgd": ({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.5}, 5.9, 1),
        "sgd_momentum": ({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-2, "momentum": 0.9,
                          "dampening": 0.0, "nesterov": False, "weight_decay": 0.05}, 4.0, 1),
        "sgdw_nesterov": ({"_target_": "backbone_lab.optim.SGDW", "_partial_": True, "lr": 1e-2, "momentum": 0.9,
                           "nesterov": True, "weight_decay": 0.5}, 4.1, 1),
    }
    runs = []
    for i, (name, (opt, val, dirs)) in enumerate(arms.items()):
        runs.append(make_run(tmp_path / "sgd" / f"{i}_optimizer={name}", _merge(base, optimizer=opt), val_end=val,
                             drift_dirs=dirs, seed=i))
    return discover_runs([tmp_path / "sgd"])


def test_sgd_controls_and_matched_windows_tables(tmp_path):
    runs = _sgd_runs(tmp_path, BASE)
    label_runs(runs)
    t4 = sgd_controls_table(runs)
    assert [r["arm"] for r in t4] == ["A", "B", "C", "C'"]
    assert t4[0]["window"].startswith("[8, 20]")  # the first dense snapshot range
    assert t4[1]["pc1_pct"] == pytest.approx(100.0)  # one drift direction -> exactly 1-D
    assert t4[0]["pc1_pct"] < 100.0
    assert not any(k.startswith("paper_") for r in t4 for k in r)  # tiny configs: no paper values
    t5 = matched_windows_table(runs)
    assert {r["arm"] for r in t5} == {"A", "C"}
    a_rows = [r for r in t5 if r["arm"] == "A"]
    assert all(r["target_val_loss"] == pytest.approx(4.0) for r in a_rows)  # SGD+momentum's final val


def test_paper_values_only_when_the_config_matches(tmp_path):
    cfg = _merge(PAPER)
    run = make_run(tmp_path / "p" / "0_adamw", cfg, steps_stored=[0, 1, 200, 400, 600, 650, 700, 750])
    runs = discover_runs([run])
    t4 = sgd_controls_table(runs)
    assert t4[0]["paper_final_val_loss"] == TABLE4["A"]["final_val_loss"]
    assert "mask_padding" in t4[0]["paper_note"]  # the paper's val loss included padding (W6)
    other = make_run(tmp_path / "p" / "1_seed7", _merge(PAPER, seed=7))
    t4b = sgd_controls_table(discover_runs([other]))
    assert "paper_final_val_loss" not in t4b[0]


def test_beta2_and_reheating_tables(tmp_path):
    for i, b2 in enumerate((0.99, 0.0)):
        make_run(tmp_path / "b" / f"{i}_b{b2}", _merge(PAPER, optimizer={**PAPER["optimizer"], "betas": [0.9, b2]},
                                                        data={**PAPER["data"], "p_probe": 0.2}), seed=i)
    runs = discover_runs([tmp_path / "b"])
    t = beta2_table(runs)
    assert [r["beta2"] for r in t] == [0.99, 0.0]
    assert t[0]["paper_pc1_rownorm_pct"] == 68.75 and t[1]["paper_drift"] == 161931.0
    assert "p_probe" not in t[0]["paper_note"]  # 0.20 is what the reference ran
    assert t[0]["early_corr"] == 0.5 and t[0]["update_abs_cos"] == 0.2

    src = make_run(tmp_path / "src", _merge(BASE))
    for i, lr in enumerate((1e-3, 3e-4)):
        make_run(tmp_path / "r" / f"{i}_lr{lr}", _merge(BASE, init_from=str(src), optimizer={**BASE["optimizer"], "lr": lr}), seed=i)
    rt = reheating_table(discover_runs([tmp_path / "r"]))
    assert [r["lr"] for r in rt] == [1e-3, 3e-4]
    assert rt[0]["peak_p_ood"] == pytest.approx(0.5, abs=0.02) and rt[0]["first_ge_060"] is None
    assert "paper_peak_p_ood" not in rt[0]  # the tiny source is not the paper's 10k run


def test_cli_writes_markdown_csv_png(tmp_path, capsys):
    from backbone_lab.compare.__main__ import main

    _sgd_runs(tmp_path, BASE)
    assert main([str(tmp_path / "sgd"), "--no-wandb"]) == 0
    out = tmp_path / "sgd" / "compare"
    for name in ("report.md", "runs.csv", "sgd_controls.csv", "matched_windows.csv", "overlay.png", "overlay_p_ood.png"):
        assert (out / name).exists(), name
    text = (out / "report.md").read_text()
    assert "paper Table 4" in text and "overlay.png" in text
    assert "sgd_controls:" in capsys.readouterr().out
    assert not (out / "wandb").exists()
    assert main([str(tmp_path / "missing")]) == 2


def test_compare_reads_layout_through_rundir_not_sweep():
    """compare finds jobs and redirects itself (RunDir + markers); importing it never loads the sweep module."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    code = "import sys, backbone_lab.compare, backbone_lab.compare.__main__; print('backbone_lab.sweep' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                         env={**os.environ, "PYTHONPATH": str(repo)}).stdout.strip()
    assert out == "False"


def test_paper_values_come_from_the_data_file():
    from backbone_lab.compare.paper_reference import BETA2, PAPER_VALUES_FILE, REHEAT, TABLE5

    doc = json.loads(PAPER_VALUES_FILE.read_text())
    assert TABLE4["A"] == doc["table4_sgd_controls"]["arms"]["A"] and TABLE4["A"]["pc1_pct"] == 61.5
    assert TABLE5[("A", tuple(range(600, 2001, 50)))]["k99"] == 19
    assert BETA2[0.0]["drift"] == 161931.0 and REHEAT[3e-4]["first_ge_060"] is None


def test_figures_label_units_use_log_axes_for_orders_of_magnitude_and_say_when_empty(tmp_path):
    from backbone_lab.analysis.plotting import pyplot
    from backbone_lab.compare.plots import PANELS, draw_panel, run_colors

    runs = _sgd_runs(tmp_path, BASE)
    label_runs(runs)
    colors = run_colors(runs)
    plt = pyplot()
    panel = {p.stem: p for p in PANELS}
    fig, ax = plt.subplots()
    assert draw_panel(ax, runs, panel["a_t"], colors) and ax.get_yscale() == "linear"
    assert "parameter units" in ax.get_ylabel() and "own backbone" in ax.get_title()
    runs[1].timeseries["a_t"] = [v * 1e4 for v in runs[1].timeseries["a_t"]]  # beta2 = 0 style blow-up
    fig, ax = plt.subplots()
    assert draw_panel(ax, runs, panel["a_t"], colors) and ax.get_yscale() == "log"
    fig, ax = plt.subplots()
    assert draw_panel(ax, runs, panel["p_ood"], colors)
    assert any("chance" in t.get_text() for t in ax.texts)  # the chance level is drawn and labelled
    for r in runs:
        r.rolling = {}
    fig, ax = plt.subplots()
    assert not draw_panel(ax, runs, panel["rho"], colors)
    assert any("not enough snapshots" in t.get_text() for t in ax.texts)
    plt.close("all")
    info = compare([tmp_path / "sgd"], tmp_path / "out")
    assert info["figures"][0] == "headline.png" and "overlay_rho.png" in info["figures"]
    assert "![headline](headline.png)" in (tmp_path / "out" / "report.md").read_text()


def test_several_run_folders_are_compared_under_the_output_root_not_the_cwd(tmp_path, monkeypatch):
    """`compare a b` without --out: <output root>/compare (the environment's, else the runs' own
    absolute paths.output_root, else the inputs' common folder) — never ./multirun_outputs."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs = tmp_path / "root" / "runs"
    a = make_run(runs / "a", _merge(BASE, seed=1, paths={"output_root": str(tmp_path / "root")}))
    b = make_run(runs / "b", _merge(BASE, seed=2, paths={"output_root": str(tmp_path / "root")}), seed=1)
    monkeypatch.delenv("BACKBONE_LAB_OUTPUT", raising=False)
    assert Path(compare([a, b], plots=False)["out_dir"]) == tmp_path / "root" / "compare"
    monkeypatch.setenv("BACKBONE_LAB_OUTPUT", str(tmp_path / "env_root"))
    assert Path(compare([a, b], plots=False)["out_dir"]) == tmp_path / "env_root" / "compare"
    monkeypatch.delenv("BACKBONE_LAB_OUTPUT")
    c = make_run(tmp_path / "other" / "c", _merge(BASE, seed=3))  # another root: the inputs' common folder
    assert Path(compare([a, c], plots=False)["out_dir"]) == tmp_path / "compare"
    assert not (elsewhere / "multirun_outputs").exists()
    assert (tmp_path / "root" / "compare" / "report.md").exists()
