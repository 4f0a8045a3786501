"""Multi-process training on CPU (gloo, 2 ranks): data parallelism = gradient accumulation,
evaluation once, rank-zero I/O, sliced snapshots, FSDP2, kill -9 + resume, and the bad inputs
that must be refused in one line before any data preparation (issue: multi-GPU correctness)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.metrics_csv import read_rows
from backbone_lab.run_markers import read_marker
from backbone_lab.trajectory.store import TrajectoryReader
from conftest import REPO, compose_config
from process_batch import start_side_by_side

STEPS = ["train.max_steps=20", "train.eval_every=10", "train.ckpt_every=10", "snapshots.every=5", "analyze=false"]


def _cfg(tmp: Path, name: str, extra=()):
    return compose_config(["debug=tiny", f"run_dir={tmp / name}", f"paths.cache_dir={tmp / 'cache'}", *STEPS, *extra])


def _rel_drift_diff(a: TrajectoryReader, b: TrajectoryReader, step: int) -> float:
    x0 = a.load(0)
    return float(np.linalg.norm(a.load(step) - b.load(step)) / np.linalg.norm(a.load(step) - x0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with micro-batch 8 x accumulate 2, two ranks with micro-batch 8, and one
    process with micro-batch 8 x accumulate 1 (what every rank training on the same samples
    amounts to)."""
    from backbone_lab.train import train

    import torch

    tmp = tmp_path_factory.mktemp("ddp")
    # OMP_NUM_THREADS unset, as in a user's shell (the suite sets it): Lightning then sets it for the ranks
    omp = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        before = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
        out = {
            "accumulate2": train(_cfg(tmp, "accumulate2", ["train.accumulate=2"])),
            "ddp2": train(_cfg(tmp, "ddp2", ["trainer=ddp_cpu"])),
        }
        # a finished local launch leaves no process group, rank variables or thread settings behind
        assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before
    finally:
        if omp is not None:
            os.environ["OMP_NUM_THREADS"] = omp
    assert "LOCAL_RANK" not in os.environ and not torch.distributed.is_initialized()
    out["single"] = train(_cfg(tmp, "single"))
    return tmp, out


def test_two_ranks_follow_the_accumulated_trajectory(runs):
    tmp, out = runs
    assert out["ddp2"]["world_size"] == 2 and out["ddp2"]["status"] == "done"
    acc, ddp, single = (TrajectoryReader(tmp / n) for n in ("accumulate2", "ddp2", "single"))
    assert ddp.world_size == 2 and acc.steps == ddp.steps == [0, 1, 5, 10, 15, 20]
    np.testing.assert_array_equal(acc.load(0), ddp.load(0))  # same initialisation on every rank
    for step in ddp.steps[1:]:
        assert _rel_drift_diff(acc, ddp, step) <= 1e-4, step
    # the wrong behaviour (each rank on the same micro-batches = one process, accumulate 1) is far away
    assert _rel_drift_diff(acc, single, 20) > 1e-2


def test_evaluation_runs_once_and_equals_the_single_process_numbers(runs):
    tmp, _ = runs
    acc, ddp = read_rows(tmp / "accumulate2" / "eval_metrics.csv"), read_rows(tmp / "ddp2" / "eval_metrics.csv")
    lines = (tmp / "ddp2" / "eval_metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 3 and [r["step"] for r in ddp] == [1, 10, 20]  # header + one row per eval
    for a, b in zip(acc, ddp):
        for key in ("val_loss", "p_in", "p_ood", "nll_in", "nll_ood", "lm_ood", "train_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_rank_zero_writes_the_run_files_once(runs):
    tmp, _ = runs
    run = tmp / "ddp2"
    assert read_marker(run)[0] == "DONE"
    names = sorted(p.name for p in (run / "trajectory").iterdir())
    assert "manifest.json" in names and "snapshots.rank0.json" in names and "snapshots.rank1.json" in names
    assert sorted(n for n in names if n.startswith("snap_00000005")) == ["snap_00000005.rank0.bin", "snap_00000005.rank1.bin"]
    assert (run / "logs" / "rank1.log").exists()  # the worker's output, not mixed into the console
    assert not list(run.rglob("*.tmp"))


def test_fsdp2_shards_train_and_write_the_owned_slices(runs, tmp_path):
    from backbone_lab.train import train

    root, _ = runs
    result = train(_cfg(tmp_path, "fsdp", ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2",
                                           "trainer.precision=32-true", f"paths.cache_dir={root / 'cache'}"]))
    assert result["status"] == "done" and result["world_size"] == 2
    acc, fsdp = TrajectoryReader(root / "accumulate2"), TrajectoryReader(tmp_path / "fsdp")
    assert fsdp.world_size == 2 and fsdp.steps == acc.steps
    for step in fsdp.steps[1:]:
        assert _rel_drift_diff(acc, fsdp, step) <= 1e-4, step


def _cli(tmp: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp / "out"), "BACKBONE_LAB_CACHE": str(tmp / "cache"),
           "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run([sys.executable, "-m", "backbone_lab", "debug=tiny", *STEPS, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_kill_9_of_a_two_rank_run_resumes_to_the_uninterrupted_snapshots(runs, tmp_path):
    root, _ = runs
    killed = _cli(tmp_path, "trainer=ddp_cpu", "run_name=k", "+callbacks.kill._target_=crash_callback.KillAtStep",
                  "+callbacks.kill.step=13", f"data.cache_dir={root / 'cache'}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "out" / "runs" / "k"
    assert read_marker(run) is None and TrajectoryReader(run).steps == [0, 1, 5, 10]
    resumed = _cli(tmp_path, "trainer=ddp_cpu", "run_name=k", "resume=auto", f"data.cache_dir={root / 'cache'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ref, got = TrajectoryReader(root / "ddp2"), TrajectoryReader(run)
    assert got.steps == ref.steps
    for step in ref.steps:
        np.testing.assert_array_equal(got.load(step), ref.load(step), err_msg=f"step {step}")
    assert [r["step"] for r in read_rows(run / "eval_metrics.csv")] == [1, 10, 20]


def _run_then_resume_on_two_ranks(tmp: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess | None]:
    first = _cli(tmp, "run_name=w", "train.max_steps=2", timeout=120)
    if first.returncode != 0:
        return first, None
    return first, _cli(tmp, "run_name=w", "train.max_steps=2", "resume=auto", "trainer=ddp_cpu", timeout=120)


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory):
    """The CLI processes of the selected tests below, started side by side (tests/process_batch.py),
    each in a folder of its own; a test reads its own with `cli_runs.result(request.node.name)`."""
    batch = start_side_by_side(request, tmp_path_factory, {
        "test_bad_distributed_settings_are_refused_before_data_preparation":
            lambda item, tmp: (tmp, _cli(tmp, *item.callspec.params["args"], timeout=120)),
        "test_resume_at_another_world_size_is_refused": lambda item, tmp: _run_then_resume_on_two_ranks(tmp)})
    yield batch
    batch.close()


@pytest.mark.parametrize("args,needle", [
    (["trainer=ddp_cpu", "trainer.devices=1"], "with one device"),
    (["trainer=ddp_cpu", "trainer.num_nodes=2"], "needs a cluster launcher"),
    (["trainer=ddp_cpu", "data.n_eval=33"], "data.n_eval=33 cannot be split over 2 ranks"),
])
def test_bad_distributed_settings_are_refused_before_data_preparation(cli_runs, request, args, needle):
    tmp_path, proc = cli_runs.result(request.node.name)  # _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing was prepared
    ours = [p for p in (tmp_path / "out").rglob("config.yaml") if ".hydra" not in p.parts]
    assert not ours  # nor the run folder (Hydra's own .hydra/ record aside)


def test_resume_at_another_world_size_is_refused(cli_runs, request):
    first, proc = cli_runs.result(request.node.name)  # a 2-step run, then resume=auto with trainer=ddp_cpu
    assert first.returncode == 0, first.stderr[-2000:]
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "other trainer settings" in lines[0] and "same world size" in lines[0]


def test_slurm_launcher_runs_one_task_per_gpu():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from backbone_lab.config_schema import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4",
                                                       "hydra.launcher.nodes=2", "trainer=ddp"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["tasks_per_node"] == 4 and launcher["nodes"] == 2 and launcher["gpus_per_node"] == 4


@pytest.mark.slow
def test_two_slurm_tasks_as_two_nodes_train_as_one_run(runs, tmp_path):
    """Two processes with the environment SLURM gives two single-GPU nodes (SLURMEnvironment:
    ranks from SLURM_PROCID, trainer.num_nodes from SLURM_NNODES): the trajectory is the one of
    the accumulated single process."""
    import socket

    root, _ = runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"), "BACKBONE_LAB_CACHE": str(root / "cache"),
               "SLURM_NTASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank),
               "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "backbone", "SLURM_JOB_ID": "42",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "backbone_lab", "debug=tiny", *STEPS, "trainer=ddp_cpu", "trainer.devices=1",
             "run_name=slurm"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    run = tmp_path / "out" / "runs" / "slurm"
    assert read_marker(run)[0] == "DONE"
    acc, got = TrajectoryReader(root / "accumulate2"), TrajectoryReader(run)
    assert got.world_size == 2 and got.steps == acc.steps
    for step in got.steps[1:]:
        assert _rel_drift_diff(acc, got, step) <= 1e-4, step
