"""The debug group beyond `tiny` (as lightning-hydra-template's): `fdr` (fast dev run), `profiler`
(Lightning's simple profiler), `overfit` (a few batches over and over): each composes and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone_lab.metrics_csv import read_rows
from backbone_lab.run_dir import RunDir
from backbone_lab.trajectory.store import TrajectoryReader
from conftest import compose_config


def _cfg(tmp_path: Path, debug: str, *extra: str):
    return compose_config([f"debug={debug}", f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra])


def test_debug_configs_compose_on_top_of_tiny():
    fdr, prof, over = (compose_config([f"debug={d}"]) for d in ("fdr", "profiler", "overfit"))
    assert fdr.trainer.debug == {"fast_dev_run": 3} and fdr.data.options.n_train_stories == 400  # tiny's sizes underneath
    assert prof.trainer.debug == {"profiler": "simple"} and prof.train.max_steps == 50
    assert over.trainer.debug == {"overfit_batches": 2} and over.train.max_steps == 100
    assert compose_config([]).trainer.debug == {}  # off by default


def test_the_empty_switches_leave_a_runs_identity_unchanged():
    """A run folder written before `trainer.debug` existed resumes (same config identity); a debug
    run is another run."""
    from omegaconf import OmegaConf

    from backbone_lab.run_identity import differences, fingerprint

    new = compose_config(["debug=tiny"])
    old = OmegaConf.to_container(new, resolve=True)
    del old["trainer"]["debug"]
    assert differences(old, new) == [] and fingerprint(old) == fingerprint(new)
    assert ("trainer.debug.fast_dev_run", None, 3) in differences(new, compose_config(["debug=fdr"]))


def test_fast_dev_run_goes_through_every_stage_in_three_steps(tmp_path):
    from backbone_lab.train import train

    result = train(_cfg(tmp_path, "fdr"))
    run = RunDir(tmp_path / "run")
    assert result["status"] == "done" and result["steps_done"] == 3
    assert TrajectoryReader(run.trajectory).steps == [0, 1, 2, 3]
    assert [r["step"] for r in read_rows(run.eval_metrics)] == [1]
    assert run.summary.exists() and run.marker("DONE").exists()
    assert not list(run.checkpoints.glob("step*.ckpt"))  # no checkpoint callback in a dev run


def test_profiler_prints_the_time_of_each_hook(tmp_path):
    import logging

    from backbone_lab.train import train

    # Lightning writes the report through its profiler's logger; where that logger's records go
    # (terminal, or a handler an earlier run in this process left) depends on import order, so
    # the test listens on the logger itself
    records: list[str] = []
    listener = logging.Handler(level=logging.INFO)
    listener.emit = lambda record: records.append(record.getMessage())
    profiler_log = logging.getLogger("lightning.pytorch.profilers.profiler")
    level, disabled = profiler_log.level, profiler_log.disabled
    profiler_log.addHandler(listener)
    profiler_log.setLevel(logging.INFO)
    profiler_log.disabled = False
    try:
        result = train(_cfg(tmp_path, "profiler", "train.max_steps=6", "train.eval_every=3", "train.ckpt_every=3"))
    finally:
        profiler_log.removeHandler(listener)
        profiler_log.setLevel(level)
        profiler_log.disabled = disabled
    assert result["status"] == "done" and result["steps_done"] == 6
    text = "\n".join(records)
    assert "FIT Profiler Report" in text
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("|  run_training_batch ")]
    assert [c.strip() for c in line.split("|")][3] == "6"  # one call per step


@pytest.mark.slow
def test_overfitting_two_batches_drives_the_training_loss_far_below_validation(tmp_path):
    from backbone_lab.train import train

    assert train(_cfg(tmp_path, "overfit"))["steps_done"] == 100
    rows = read_rows(RunDir(tmp_path / "run").eval_metrics)
    first, last = rows[0], rows[-1]
    assert last["train_lm_loss"] < first["train_lm_loss"] / 2.5
    assert last["train_lm_loss"] < 0.6 * last["val_loss"]  # memorised, not learned
