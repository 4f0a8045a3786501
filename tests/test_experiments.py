"""Every experiment composes and instantiates; divergence, reheating and a real sweep end to end."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from backbone_lab.run_markers import read_marker
from conftest import CONF, REPO, TINY_OVERRIDES, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose_with_hydra(overrides: list[str]):
    from backbone_lab.config_schema import register_configs
    from backbone_lab.sweep import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    from backbone_lab.analysis.config import AnalysisConfig

    overrides = [f"+experiment={experiment}", f"run_dir={tmp_path}", "logger.wandb.mode=disabled"]
    if "reheating" in experiment:
        overrides.append(f"init_from={tmp_path / 'source'}")
    cfg = _compose_with_hydra(overrides)
    assert cfg.experiment_name == experiment  # its own folder under multirun_outputs/
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    # the optimizer factory takes the two parameter groups (decay / no-decay)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    groups = [{"params": [model[0].weight]}, {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}]
    opt = instantiate(cfg.optimizer)(groups)
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups[1]["weight_decay"] == 0.0
    for node in (cfg.callbacks or {}).values():
        instantiate(node)
    for node in (cfg.logger or {}).values():
        instantiate(node)
    AnalysisConfig(**OmegaConf.to_container(cfg.analysis, resolve=True))  # validated analysis parameters
    params = cfg.hydra.sweeper.params or {}
    if params:
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN", "a sweep experiment runs with -m implied"
        assert "Grid" not in text
    # the snapshot cadence fits the run
    from backbone_lab.trajectory.callback import snapshot_steps

    snap = cfg.snapshots
    steps = snapshot_steps(int(cfg.train.max_steps), int(snap.every), snap.dense, snap.extra_steps)
    assert steps[-1] == cfg.train.max_steps


@pytest.mark.parametrize("optimizer", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_every_optimizer_trains_one_step(optimizer):
    cfg = compose_config([f"optimizer={optimizer}"])
    w = torch.nn.Parameter(torch.ones(4))
    ln = torch.nn.Parameter(torch.ones(2))
    opt = instantiate(cfg.optimizer)([{"params": [w]}, {"params": [ln], "weight_decay": 0.0}])
    (w.sum() + ln.sum()).backward()
    opt.step()
    assert not torch.equal(w.detach(), torch.ones(4))


def test_paper_protocols_are_encoded():
    sgd = {name: compose_config(["+experiment=sgd_controls", f"optimizer={name}"]) for name in
           ("adamw", "sgd", "sgd_momentum", "sgdw_nesterov")}
    assert sgd["sgd"].optimizer.lr == 1e-3 and sgd["sgd"].optimizer.weight_decay == 0.5 and sgd["sgd"].optimizer.momentum == 0
    assert sgd["sgd_momentum"].optimizer.lr == 1e-2 and sgd["sgd_momentum"].optimizer.weight_decay == 0.05
    assert sgd["sgdw_nesterov"].optimizer._target_ == "backbone_lab.optim.SGDW" and sgd["sgdw_nesterov"].optimizer.nesterov
    c = sgd["adamw"]
    assert (c.train.max_steps, c.schedule.warmup, c.schedule.total, c.model.name) == (4000, 1500, 4000, "paper")
    assert compose_config(["+experiment=paper_baseline"]).trainer.precision == "32-true"  # the paper's fp32
    assert compose_config(["+experiment=paper_quick"]).trainer.precision == "bf16-mixed"
    assert list(map(list, c.snapshots.dense)) == [[600, 2000, 50], [2000, 4000, 100]]
    b = compose_config(["+experiment=beta2_sweep"])
    assert b.data.p_probe == 0.10 and b.analysis.anchor_step == 1
    r = compose_config(["+experiment=reheating", "init_from=/src"])
    assert r.objective.lambda_schedule == [[0, 4.0]] and r.schedule.warmup == 200 and r.train.max_steps == 2000
    assert r.train.eval_every == 100 and r.analysis.source_run == "/src"
    p = compose_config(["+experiment=paper_baseline"])
    assert (p.train.max_steps, p.snapshots.every, p.analysis.anchor_step, p.schedule.warmup) == (10000, 200, 1, 1500)


def test_cprime_early_stop_rule(tmp_path):
    from backbone_lab.callbacks.stop_rules import EarlyStopRule

    rows = [{"step": step, "val_loss": val, "p_ood": p} for step, val, p in ((1, 10.0, 0.0), (1000, 6.0, 0.015), (2000, 5.25, 0.013))]
    rule = EarlyStopRule(2000, val_loss_above=5.1, best_p_ood_below=0.02,
                         only_for=["backbone_lab.optim.SGDW"], optimizer="backbone_lab.optim.SGDW")
    assert rule.active and rule.decide(rows)["stop"]
    assert not EarlyStopRule(2000, 5.1, 0.02, only_for=["backbone_lab.optim.SGDW"], optimizer="torch.optim.SGD").active
    assert not EarlyStopRule(2000, val_loss_above=5.3).decide(rows)["stop"]


def _tiny(tmp_path: Path, name: str, extra: list[str] = ()):
    return compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}", *extra])


def test_diverging_run_is_marked_and_still_analysed(tmp_path):
    from backbone_lab.train import train

    cfg = _tiny(tmp_path, "div", ["train.max_steps=20", "+callbacks.drift_guard._target_=backbone_lab.callbacks.stop_rules.DriftGuard",
                                  "+callbacks.drift_guard.max_drift=1e-9", "+callbacks.drift_guard.every=10"])
    result = train(cfg)
    assert result["status"] == "diverged" and result["diverged_at_step"] == 10
    state, payload = read_marker(tmp_path / "div")
    assert state == "DONE" and payload["status"] == "diverged"
    assert (tmp_path / "div" / "analysis" / "summary.json").exists()


def test_run_diverging_before_two_snapshots_is_still_a_clean_diverged_run(tmp_path):
    from backbone_lab.train import train

    result = train(_tiny(tmp_path, "div1", ["train.divergence_loss=1e-3"]))  # the first loss (~19) is "too high"
    assert result["status"] == "diverged" and result["diverged_at_step"] == 1
    state, payload = read_marker(tmp_path / "div1")
    assert state == "DONE" and payload["status"] == "diverged" and "analysis_skipped" in payload


def test_reheating_starts_from_source_weights_with_fresh_optimizer(tmp_path):
    from backbone_lab.trajectory.store import TrajectoryReader
    from backbone_lab.train import train

    src = tmp_path / "src"
    train(_tiny(tmp_path, "src"))
    cfg = _tiny(tmp_path, "reheat", ["+experiment=reheating_tiny", f"init_from={src}", "train.max_steps=10",
                                     "train.eval_every=5", "snapshots.every=5", "train.ckpt_every=5", "schedule.warmup=2"])
    assert cfg.analysis.source_run == str(src)
    train(cfg)
    s, r = TrajectoryReader(src / "trajectory"), TrajectoryReader(tmp_path / "reheat" / "trajectory")
    assert (r.load(0) == s.load(s.steps[-1])).all()  # starts from the source's final trunk
    state = torch.load(tmp_path / "reheat" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    adam_steps = {float(v["step"]) for v in state["optimizer_states"][0]["state"].values()}
    assert adam_steps == {10.0}  # moments started at zero with the reheating run (source had 30 steps)
    import json

    summary = json.loads((tmp_path / "reheat" / "analysis" / "summary.json").read_text())
    assert summary["reheating"]["steps"] and len(summary["reheating"]["a"]) == len(summary["reheating"]["steps"])
    assert "reheating" not in json.loads((src / "analysis" / "summary.json").read_text())  # the source run is untouched


@pytest.mark.slow
def test_tiny_sweep_end_to_end_survives_failures_and_skips_done_jobs(tmp_path):
    """`python -m backbone_lab +experiment=optimizer_demo -m ...` with 2 good and 2 failing jobs."""
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"), "WANDB_SILENT": "true",
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_cfg")}
    tiny = [o for o in TINY_OVERRIDES if not o.startswith(("logger=", "callbacks="))]
    cmd = [sys.executable, "-m", "backbone_lab", "+experiment=optimizer_demo", "-m", "optimizer=adamw,sgd_tiny",
           "model.n_head=4,3", "logger=wandb", "logger.wandb.mode=offline", f"paths.cache_dir={tmp_path / 'cache'}",
           "analysis.figures=false", *tiny]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]  # failed jobs make the sweep fail (after all jobs ran)
    assert "Sweep summary" in proc.stdout and "2 done, 2 failed" in proc.stdout
    assert "2 sweep job(s) failed" in proc.stderr
    sweeps = sorted((tmp_path / "out" / "optimizer_demo").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    states = {j.name.split("_")[0]: read_marker(j)[0] for j in jobs}
    assert sorted(states.values()) == ["DONE", "DONE", "FAILED", "FAILED"]
    wandb_ids = set()
    for j in jobs:
        if read_marker(j)[0] == "DONE":
            runs = list((j / "wandb").glob("offline-run-*"))
            assert len(runs) == 1, j
            wandb_ids.add(runs[0].name.rsplit("-", 1)[-1])
    assert len(wandb_ids) == 2  # one distinct W&B run per job

    from backbone_lab.compare.__main__ import main as compare_main

    assert compare_main([str(sweeps[0])]) == 0
    rows = list(csv.DictReader(open(sweeps[0] / "compare" / "runs.csv")))
    assert sorted(r["state"] for r in rows) == ["done", "done", "failed", "failed"]
    assert (sweeps[0] / "compare" / "overlay.png").exists()

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stderr[-3000:]  # the two bad jobs fail again
    assert "2 skipped" in again.stdout  # the finished jobs are not trained again
