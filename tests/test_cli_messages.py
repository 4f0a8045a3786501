"""What the command line says when a user gets something wrong or asks for something done:
nearest-name hints, no torch before a config error, resume=auto needs a run name, the exact
continuing command, "already complete", a GPU experiment on a machine without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config

HEAVY = ("torch", "lightning", "wandb", "datasets")


def _cli(tmp_path, *args, python_flags=(), timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), BACKBONE_LAB_OUTPUT=str(tmp_path / "out"),
               BACKBONE_LAB_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, *python_flags, "-m", "backbone_lab", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("arg,hint", [
    ("optimizer=adamww", "did you mean optimizer=adamw?"),
    ("+experiment=beta2_swep", "did you mean +experiment=beta2_sweep?"),
    ("analysis.anchr_step=1", "did you mean analysis.anchor_step=1?"),
    ("train.max_step=10", "did you mean train.max_steps=10?"),
    ("callbacks.progress.plain_evry_s=3", "did you mean callbacks.progress.plain_every_s=3?"),
    ("data.options.n_train_storis=3", "did you mean data.options.n_train_stories=3?"),
    ("data.options.train_files=[a.txt]", "it is one of data=local: choose data=local with it"),
])
def test_a_typo_gets_the_nearest_name_in_one_line_before_torch_is_imported(tmp_path, arg, hint):
    proc = _cli(tmp_path, arg, python_flags=("-X", "importtime"))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and hint in errors[0], errors
    assert "+train.max_step" not in errors[0]  # Hydra's advice to append the typo is dropped
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "hydra" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert not (tmp_path / "out").exists()


def test_no_hint_when_nothing_is_close(monkeypatch, capsys, tmp_path):
    from backbone_lab.__main__ import check_command_line

    monkeypatch.setenv("BACKBONE_LAB_OUTPUT", str(tmp_path / "out"))
    with pytest.raises(SystemExit):
        check_command_line(["backbone_lab", "optimizer=zzzzqq"])
    err = capsys.readouterr().err
    assert "Could not find 'optimizer/zzzzqq'" in err and "did you mean" not in err


def test_resume_auto_without_a_run_name_is_refused_with_the_command_to_use(tmp_path):
    proc = _cli(tmp_path, "debug=tiny", "resume=auto")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: resume=auto needs run_name=NAME, the folder to continue (without it every "
                                   "run starts in a new timestamped folder): python -m backbone_lab debug=tiny "
                                   "run_name=NAME resume=auto")
    assert not (tmp_path / "out").exists()


def test_the_continuing_command_names_the_run_folder():
    from backbone_lab.__main__ import continue_command

    cfg = OmegaConf.create({"run_name": "2026-12-04_16-11-30_123456",
                            "run_dir": "/x/multirun_outputs/runs/2026-12-04_16-11-30_123456"})
    assert continue_command(cfg, False, ["debug=tiny", "optimizer.lr=3e-4"]) == (
        "python -m backbone_lab debug=tiny optimizer.lr=3e-4 run_name=2026-12-04_16-11-30_123456 resume=auto")
    assert continue_command(cfg, False, ["run_name=mine", "resume=auto", "seed=3"]).endswith(
        "seed=3 run_name=2026-12-04_16-11-30_123456 resume=auto")
    assert continue_command(cfg, False, ["run_dir=/data/my run"]) == "python -m backbone_lab 'run_dir=/data/my run' resume=auto"
    assert continue_command(cfg, True, ["-m", "seed=1,2"]) == "python -m backbone_lab -m seed=1,2"


def test_a_gpu_experiment_on_a_machine_without_a_gpu_says_how_to_run_it_on_the_cpu(monkeypatch, capsys, tmp_path):
    import torch

    from backbone_lab.__main__ import check_command_line

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("BACKBONE_LAB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("BACKBONE_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        check_command_line(["backbone_lab", "+experiment=beta2_sweep", "logger=none"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "+experiment=beta2_sweep needs a GPU (trainer.accelerator=gpu)" in lines[0], lines
    assert "add trainer=cpu" in lines[0] and "+experiment=beta2_sweep_tiny" in lines[0]
    assert "Error in call to target" not in lines[0]


def test_the_check_leaves_cpu_runs_and_gpu_machines_alone(monkeypatch):
    import torch

    from backbone_lab.train import check_accelerator_present

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_accelerator_present(compose_config(["+experiment=beta2_sweep", "trainer=cpu"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_accelerator_present(compose_config(["+experiment=beta2_sweep"]))


@pytest.mark.slow
def test_resuming_a_finished_run_says_already_complete_and_does_nothing(tmp_path):
    first = _cli(tmp_path, "debug=tiny", "run_name=done", "resume=auto")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "out" / "runs" / "done"
    summary = run / "analysis" / "summary.json"
    before = {p: p.stat().st_mtime_ns for p in [summary, run / "DONE", run / "checkpoints" / "last.ckpt"]}
    again = _cli(tmp_path, "debug=tiny", "run_name=done", "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"already complete: {run} finished earlier" in again.stdout
    assert "backbone_lab run: already complete" in again.stdout
    assert "analysing the trajectory" not in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing trained, analysed or written
