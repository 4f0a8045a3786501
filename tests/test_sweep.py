"""Sweep machinery (backbone_lab/sweep.py) without training: fingerprints, skip / resume
decisions, failure capture, job folder names, the end-of-sweep summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from backbone_lab import sweep
from backbone_lab.run_markers import read_marker, write_marker

from conftest import compose_config


@pytest.fixture(scope="module")
def cfg():
    return compose_config(["logger=wandb", "run_dir=/tmp/a"])


def _copy(cfg, **updates):
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for k, v in updates.items():
        OmegaConf.update(c, k, v, force_add=True)
    return c


def test_fingerprint_ignores_places_and_presentation(cfg):
    fp = sweep.fingerprint(cfg)
    same = _copy(cfg, run_dir="/tmp/b", run_name="other", tags=["x"], **{"paths.output_root": "/elsewhere",
                                                                          "logger.wandb.mode": "offline"})
    assert sweep.fingerprint(same) == fp
    no_bar = _copy(cfg)
    no_bar.callbacks = {}
    assert sweep.fingerprint(no_bar) == fp  # progress bars are presentation
    assert sweep.fingerprint(_copy(cfg, seed=7)) != fp
    assert sweep.fingerprint(_copy(cfg, **{"optimizer.lr": 0.5})) != fp
    rule = _copy(cfg, **{"callbacks.stop": {"_target_": "backbone_lab.callbacks.stop_rules.EarlyStopRule", "at_step": 5}})
    assert sweep.fingerprint(rule) != fp  # a stopping rule changes what the run computes


def _job(root: Path, sweep_name: str, job: str, cfg, marker: str | None = None, ckpt: bool = False) -> Path:
    d = root / sweep_name / job
    d.mkdir(parents=True)
    OmegaConf.save(cfg, d / "config.yaml", resolve=True)
    if marker == "DONE":
        write_marker(d, "DONE", {"status": "done", "final_val_loss": 3.0})
    elif marker == "FAILED":
        write_marker(d, "FAILED", {"error": "RuntimeError: killed"})
    if ckpt:
        (d / "checkpoints").mkdir()
        (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return d


def test_find_previous_done_beats_unfinished(tmp_path, cfg):
    fp = sweep.fingerprint(cfg)
    current = tmp_path / "2026-01-03"
    current.mkdir()
    unfinished = _job(tmp_path, "2026-01-02", "0_a", _copy(cfg, run_dir="/x"), "FAILED", ckpt=True)
    assert sweep.find_previous(tmp_path, current, fp) == (None, unfinished)
    _job(tmp_path, "2026-01-02", "1_b", _copy(cfg, seed=5), "DONE")  # another job: no match
    done = _job(tmp_path, "2026-01-01", "0_a", cfg, "DONE")
    assert sweep.find_previous(tmp_path, current, fp) == (done, None)
    _job(tmp_path, "2026-01-03", "0_a", cfg, "DONE")  # the current sweep itself is never matched
    assert sweep.find_previous(tmp_path, current, fp)[0] == done
    no_ckpt = tmp_path / "other"
    _job(no_ckpt, "s1", "0_a", cfg, "FAILED")
    assert sweep.find_previous(no_ckpt, no_ckpt / "s2", fp) == (None, None)  # nothing to resume from


def _ctx(monkeypatch, job_dir: Path, overrides=("optimizer=sgd", "seed=3")):
    job_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(sweep, "_job_context", lambda: {"job_dir": job_dir, "sweep_dir": job_dir.parent, "num": 0,
                                                       "overrides": list(overrides), "override_dirname": ""})


def test_failing_job_is_recorded_and_returns(tmp_path, cfg, monkeypatch):
    job = tmp_path / "exp" / "s1" / "0_x"
    _ctx(monkeypatch, job)
    c = _copy(cfg, run_dir=None)

    def boom(_):
        raise RuntimeError("loss exploded in a way train() did not catch")

    assert sweep.run_sweep_job(c, boom) is None
    state, payload = read_marker(job)
    assert state == "FAILED" and "loss exploded" in payload["error"]


def test_done_twin_is_skipped_and_unfinished_is_resumed(tmp_path, cfg, monkeypatch):
    c = _copy(cfg, run_dir=None)
    done = _job(tmp_path / "exp", "s0", "0_x", c, "DONE")
    job = tmp_path / "exp" / "s1" / "0_x"
    _ctx(monkeypatch, job)
    called = []
    out = sweep.run_sweep_job(_copy(c), lambda cfg_: called.append(cfg_) or {})
    assert not called and out["status"] == "skipped" and out["run_dir"] == str(done)
    assert sweep.resolve_redirect(job) == (done, "done")
    assert sweep.job_state(job)["state"] == "skipped (done earlier)"

    c2 = _copy(c, seed=11)
    old = _job(tmp_path / "exp", "s0", "1_y", c2, None, ckpt=True)  # killed: no marker, has last.ckpt
    job2 = tmp_path / "exp" / "s1" / "1_y"
    _ctx(monkeypatch, job2)
    seen = {}

    def fake_train(cfg_):
        seen.update(run_dir=cfg_.run_dir, resume=cfg_.resume, run_name=cfg_.run_name,
                    wandb_name=cfg_.logger.wandb.name, tags=list(cfg_.logger.wandb.tags), swept=dict(cfg_.logger.wandb.config.swept))
        return {"status": "done"}

    assert sweep.run_sweep_job(_copy(c2), fake_train)["status"] == "done"
    assert seen["run_dir"] == str(old) and seen["resume"] == "auto"
    assert seen["wandb_name"].endswith("/1_y") and "optimizer=sgd" in seen["tags"]
    assert seen["swept"] == {"optimizer": "sgd", "seed": 11}  # typed, from the job's config (no multirun.yaml: every override)
    assert json.loads((job2 / "REDIRECT.json").read_text())["reason"] == "resumed"


def test_job_dirname_is_safe_and_bounded():
    assert sweep.job_dirname("optimizer=sgd,seed=1") == "optimizer=sgd,seed=1"
    assert "/" not in sweep.job_dirname("init_from=a/b/c")
    long_a = ",".join(f"key{i}=value{i}" for i in range(40))
    long_b = long_a + ",x=1"
    assert len(sweep.job_dirname(long_a)) <= sweep.MAX_DIRNAME
    assert sweep.job_dirname(long_a) != sweep.job_dirname(long_b)


def test_summary_lists_every_job_state(tmp_path, cfg, capsys):
    s = tmp_path / "exp" / "s1"
    _job(tmp_path / "exp", "s1", "0_ok", cfg, "DONE")
    _job(tmp_path / "exp", "s1", "1_bad", cfg, "FAILED")
    d = _job(tmp_path / "exp", "s1", "2_div", cfg)
    write_marker(d, "DONE", {"status": "diverged", "diverged_at_step": 17})
    (s / "3_running" / ".hydra").mkdir(parents=True)
    rows = sweep.summarize(s)
    assert [r["state"] for r in rows] == ["done", "failed", "diverged", "unfinished"]
    assert rows[2]["step"] == 17
    sweep.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(s)}}}))
    out = capsys.readouterr().out
    assert "1 done, 1 failed" in out.replace("1 diverged, ", "") or "1 failed" in out
    assert (s / "sweep_summary.md").exists() and len(json.loads((s / "sweep_summary.json").read_text())) == 4


@pytest.mark.slow
def test_submitit_local_executor_runs_the_sweep_jobs(tmp_path):
    """The SLURM launcher's code path without SLURM: hydra-submitit's local executor pickles each
    job, runs it in its own process through `run_sweep_job`, and the sweep summary collects them."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"), "BACKBONE_LAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "backbone_lab", "-m", "hydra/launcher=submitit_local", "debug=tiny",
                           "train.max_steps=4", "analyze=false", "seed=1,2", "experiment_name=subm"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = next((tmp_path / "out" / "subm").iterdir())
    rows = json.loads((sweep / "sweep_summary.json").read_text())
    assert sorted(r["state"] for r in rows) == ["done", "done"]
    assert list(sweep.rglob(".submitit/*"))  # the jobs really went through submitit
