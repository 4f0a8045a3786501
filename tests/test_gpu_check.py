"""benchmarks/gpu_check.sh and +experiment=paper_quick: the offline install, the time plan, the
overrides it hands to the CLI, and the whole check as a CPU dry run (the GPU run itself needs a
GPU: see docs/EXPERIMENTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import CONF, REPO, compose_config

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

QUICK_ARMS = ("adamw", "adamw_beta2_080", "sgd", "sgd_momentum", "sgdw_nesterov")


def _fake_wheel(folder: Path, dist: str, module: str, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (what `make gpu-wheels` downloads, without a registry)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


# ----------------------------------------------------------------------------- paper_quick
def _quick(extra: list[str]):
    from backbone_lab.sweep import register_resolvers

    register_resolvers()
    return compose_config(["+experiment=paper_quick", *extra])


@pytest.mark.parametrize("arm", QUICK_ARMS)
def test_paper_quick_composes_and_instantiates_every_arm(arm):
    from backbone_lab.train import check_optimizer, typed
    from backbone_lab.trajectory.callback import snapshot_steps

    cfg = _quick([f"optimizer={arm}"])
    conf = typed(cfg)  # every schema validates
    assert (conf["model"].name, conf["data"].tokenizer_name, conf["data"].source) == ("paper", "gpt2", "synthetic")
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert (conf["train"].max_steps, conf["train"].accumulate, conf["schedule"].warmup, conf["schedule"].total) == (1000, 2, 375, 1000)
    check_optimizer(instantiate(cfg.optimizer))  # built on the three parameter groups, as train() does first
    if arm == "adamw_beta2_080":
        assert list(cfg.optimizer.betas) == [0.9, 0.8] and cfg.optimizer.weight_decay == 0.5
    steps = snapshot_steps(1000, int(cfg.snapshots.every), cfg.snapshots.dense, cfg.snapshots.extra_steps)
    assert steps[-1] == 1000 and {150, 175, 500} <= set(steps)


def test_paper_quick_grid_and_tinystories_switch():
    text = (CONF / "experiment" / "paper_quick.yaml").read_text()
    assert text.startswith("# @package _global_")
    from hydra import compose, initialize_config_dir

    from backbone_lab.config_schema import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=["+experiment=paper_quick"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params.optimizer == ",".join(QUICK_ARMS)
    hub = _quick(["data=tinystories"])
    assert hub.data.source == "tinystories" and hub.data.tokenizer_name == "gpt2"


# ----------------------------------------------------------------------------- the plan
def test_plan_uses_the_measured_step_time_and_stays_in_bounds():
    slow, _ = gpu_check.choose_steps(330, None)
    fast, why = gpu_check.choose_steps(330, 0.04)
    assert why.startswith("330 s left") and "measured 40 ms/step" in why
    assert gpu_check.MIN_STEPS <= slow < fast <= gpu_check.MAX_STEPS
    assert slow % gpu_check.STEP_QUANTUM == 0 and fast % gpu_check.STEP_QUANTUM == 0
    assert gpu_check.choose_steps(10, None)[0] == gpu_check.MIN_STEPS       # no time: the minimum
    assert gpu_check.choose_steps(10_000, 0.01)[0] == gpu_check.MAX_STEPS   # plenty: the cap


def test_measured_step_time_comes_from_the_bf16_lightning_row(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"dry_run": False, "variants": [
        {"key": "a", "status": "ran", "step_ms": {"median": 400.0}},
        {"key": "d", "status": "ran", "step_ms": {"median": 50.0}}]}))
    assert gpu_check.measured_step_seconds(bench) == pytest.approx(0.05)
    bench.write_text(json.dumps({"dry_run": True, "variants": [{"key": "d", "status": "ran", "step_ms": {"median": 5.0}}]}))
    assert gpu_check.measured_step_seconds(bench) is None  # a dry run's CPU numbers never size a GPU run
    assert gpu_check.measured_step_seconds(tmp_path / "missing.json") is None


@pytest.mark.parametrize("dry_run", [False, True])
def test_plan_overrides_compose_with_paper_quick(dry_run):
    from backbone_lab.train import typed
    from backbone_lab.trajectory.callback import snapshot_steps

    overrides = gpu_check.run_overrides(440, dry_run)
    assert overrides[0] == "optimizer=adamw,sgd_momentum"
    single = ["optimizer=adamw" if o.startswith("optimizer=") else o for o in overrides
              if not o.startswith("hydra.")]  # compose() takes one job, without the sweep's hydra keys
    cfg = _quick(single)
    conf = typed(cfg)
    assert conf["train"].max_steps == 440 and conf["schedule"].total == 440 and conf["schedule"].warmup == 165
    assert cfg.objective.lambda_schedule == [[0, 2.0], [440, 4.0]] and cfg.logger == {}
    assert snapshot_steps(440, int(cfg.snapshots.every), cfg.snapshots.dense, [])[-1] == 440
    assert cfg.callbacks.lines._target_ == "progress_lines.ProgressLines"
    assert cfg.trainer.accelerator == ("cpu" if dry_run else "gpu")


# ----------------------------------------------------------------------------- install
def test_install_takes_only_what_the_interpreter_lacks(tmp_path, capsys):
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "bl_gpu_check_probe", "bl_gpu_check_probe")       # missing here -> installed
    _fake_wheel(wheels, "pytest", "pytest_shadow", version="0.0.1")         # present here -> kept
    target = tmp_path / "site"
    assert gpu_check.install(wheels, target, force=False) == 0
    out = capsys.readouterr().out
    assert "install bl_gpu_check_probe-0.1-py3-none-any.whl  [missing]" in out and "keep    pytest" in out
    assert (target / "bl_gpu_check_probe" / "__init__.py").exists() and not (target / "pytest_shadow").exists()
    assert gpu_check.install(wheels, tmp_path / "forced", force=True) == 0  # pure wheels forced in
    assert (tmp_path / "forced" / "pytest_shadow" / "__init__.py").exists()


# ----------------------------------------------------------------------------- the whole check
@pytest.mark.slow
def test_gpu_check_dry_run_end_to_end(tmp_path):
    """GPU_CHECK_DRY_RUN=1: every step of the GPU check at toy size on the CPU, the wheel install
    from a folder included; one table at the end, results copied out."""
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "bl_gpu_check_probe", "bl_gpu_check_probe")
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "GPU_CHECK_PYTHON": sys.executable,
           "GPU_CHECK_WHEELS": str(wheels), "GPU_CHECK_OUT": str(tmp_path / "out"),
           "GPU_CHECK_COPY_TO": str(tmp_path / "copied"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for n in range(1, 8):
        assert f"== {n}/7" in log  # every step announced its start
    assert "install bl_gpu_check_probe-0.1-py3-none-any.whl  [missing]" in log
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "DRY RUN" in summary and "| bench a:" in summary
    assert "run: AdamW" in summary and "run: SGD+momentum" in summary
    assert "PC1 row-norm %" in summary and "k95 (row-norm)" in summary
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    runs = [r for r in rows if r["row"].startswith("run:")]
    assert len(runs) == 2 and all(r["state"] == "done" for r in runs)
    assert sorted(p.name for p in (tmp_path / "copied").iterdir()) == [
        "bench.json", "compare_report.md", "compare_runs.csv", "summary.json", "summary.md"]
