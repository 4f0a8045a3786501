"""Processes and ranks: launching local data-parallel workers, and the few collectives we need.

**Launching.** `python -m backbone_lab trainer=ddp_cpu` (or `trainer=ddp` on a GPU node) starts
one process; `launch_local_workers` then starts ranks 1..W-1 as
`python -m backbone_lab.worker <run>/config.yaml <checkpoint or ->` (`worker.py`) with `LOCAL_RANK`,
`RANK`, `WORLD_SIZE`, `MASTER_ADDR/PORT` set, and sets the same variables for itself (rank 0), so
Lightning sees "processes created externally" and never re-executes the command line (its own
launcher would re-run a Hydra multirun as a whole sweep per rank, and re-resolve the
timestamped run name). Every rank therefore trains on exactly the resolved config rank 0 saved.
Workers die with rank 0 (`PR_SET_PDEATHSIG`), and rank 0 stops when a worker fails.
On SLURM (`SLURMEnvironment`) or under torchrun the launcher of the cluster has already
started every rank and nothing is launched here.

**Collectives.** `all_reduce_sum` adds a tensor over ranks (identity on one process).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import torch

RANK_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
_threads_before_launch: tuple[int, str | None] | None = None


def external_launcher_detected() -> bool:
    """Whether a cluster launcher (SLURM srun, torchrun) or our own already created the ranks."""
    return any(k in os.environ for k in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"))


def env_global_rank() -> int:
    """This process's global rank as its launcher set it (0 for a single process)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalWorkers:
    """Ranks 1..W-1 of a one-node run, started by rank 0 (see the module docstring)."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs
        self.failed: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, daemon=True, name="rank-watchdog")
        self._watch.start()

    def _watchdog(self) -> None:
        while not self._stop.wait(1.0):
            for rank, p in enumerate(self.procs, start=1):
                code = p.poll()
                stopped_on_signal = code in (128 + signal.SIGTERM, 128 + signal.SIGINT)  # preempted with rank 0
                if code not in (None, 0) and not stopped_on_signal and (rank, code) not in self.failed:
                    self.failed.append((rank, code))
                    print(f"error: rank {rank} exited with status {code} (its log: {getattr(p, 'log_path', '?')}); "
                          "stopping the run", file=sys.stderr)
                    # gloo raises in rank 0 as soon as a peer's connection closes, and train() then
                    # records FAILED; a backend that would block forever is cut off after a grace period
                    if not self._stop.wait(60.0):
                        os._exit(1)

    def wait(self, timeout: float = 120.0) -> list[int]:
        """Wait for the workers to finish; returns their exit codes."""
        self._stop.set()
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def terminate(self) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def launch_local_workers(world_size: int, config_path: Path, ckpt_path: Path | None, log_dir: Path) -> LocalWorkers:
    """Start ranks 1..world_size-1 on this node and make this process rank 0 (sets the env)."""
    global _threads_before_launch
    # Lightning divides the cores among local ranks (torch threads and OMP_NUM_THREADS): undone
    # by end_local_run, or the next single-process job of a multirun would run on fewer threads
    _threads_before_launch = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
    port = _free_port()
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size), "NODE_RANK": "0"}
    os.environ.update(base, LOCAL_RANK="0", RANK="0")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(1, world_size):
        env = {**os.environ, **base, "LOCAL_RANK": str(rank), "RANK": str(rank)}
        log_path = log_dir / f"rank{rank}.log"
        with open(log_path, "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "backbone_lab.worker", str(config_path), str(ckpt_path or "-")],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        p.log_path = log_path
        procs.append(p)
    return LocalWorkers(procs)


def end_local_run() -> None:
    """Forget the process group and the rank variables of a finished local launch (a multirun
    runs its jobs in one process: the next job may be a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in RANK_ENV:
        os.environ.pop(key, None)
    if _threads_before_launch:
        threads, omp = _threads_before_launch
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place (gloo cannot reduce float64 on CUDA: moved if needed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """(world_size, *tensor.shape): every rank's `tensor` (one process: tensor[None])."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        world = torch.distributed.get_world_size()
        out = tensor.new_empty(world * tensor.numel())  # gloo wants a flat output
        torch.distributed.all_gather_into_tensor(out, tensor.contiguous().reshape(-1))
        return out.view(world, *tensor.shape)
    return tensor[None]


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
