"""Processes and ranks: launching local data-parallel workers, and the few collectives we need.

**Launching.** `python -m backbone_lab trainer=ddp_cpu` (or `trainer=ddp` on a GPU node) starts
one process; `launch_local_workers` then starts ranks 1..W-1 as
`python -m backbone_lab.worker <run>/config.yaml <checkpoint or ->` (`worker.py`) with `LOCAL_RANK`,
`RANK`, `WORLD_SIZE`, `MASTER_ADDR/PORT` set, and sets the same variables for itself (rank 0), so
Lightning sees "processes created externally" and never re-executes the command line (its own
launcher would re-run a Hydra multirun as a whole sweep per rank, and re-resolve the
timestamped run name). Every rank therefore trains on exactly the resolved config rank 0 saved.
Workers die with rank 0 (`PR_SET_PDEATHSIG`), and rank 0 stops when a worker fails.

**Hung ranks.** Every process group is created with `trainer.collective_timeout_s` (default
300 s): a collective that waits longer for a rank fails instead of hanging for the library's
default (tens of minutes). Each launched rank also sends a heartbeat (one byte a second, from a
thread, through a pipe to rank 0); the launcher's watchdog stops the run when a rank stays
silent for that long (stopped with SIGSTOP, frozen, swapped out): one line naming the rank, the
other ranks killed, FAILED written with that line (`LocalWorkers.failure`).
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
import time
from pathlib import Path

import torch

from backbone_lab.durable import open_append

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


HEARTBEAT_ENV = "BACKBONE_LAB_HEARTBEAT_FD"
HEARTBEAT_PERIOD_S = 1.0
GRACE_S = 60.0  # after stopping the workers: how long rank 0 may take to fail on its own
STARTUP_S = 120.0  # silence allowed before a rank's first heartbeat (its imports)


class LocalWorkers:
    """Ranks 1..W-1 of a one-node run, started by rank 0 (see the module docstring).

    The watchdog thread checks every second that each live rank is alive and heard from (its
    heartbeat pipe): a rank that exited with an error, or stayed silent for `silence_timeout_s`,
    ends the run — the workers are killed (rank 0's pending collective then fails at once) and
    `failure` names the rank: `train()` writes it into FAILED and raises `RankFailure` (the CLI:
    that one line, exit 1). If rank 0 is still blocked after `GRACE_S`, the watchdog prints the
    line, runs `on_give_up(failure)` (it writes the marker) and exits the process with 1."""

    def __init__(self, procs: list[subprocess.Popen], heartbeats: list[int] | None = None,
                 silence_timeout_s: float = 300.0, on_give_up=None):
        self.procs = procs
        self.failed: list[tuple[int, int]] = []
        self.failure: str | None = None
        self.silence_timeout_s = float(silence_timeout_s)
        self._heartbeats = heartbeats or []
        self._last_heard = [time.monotonic()] * len(procs)
        self._heard = [False] * len(procs)
        self._on_give_up = on_give_up
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, daemon=True, name="rank-watchdog")
        self._watch.start()

    def _listen(self) -> None:
        now = time.monotonic()
        for i, fd in enumerate(self._heartbeats):
            try:
                if os.read(fd, 4096):
                    self._last_heard[i], self._heard[i] = now, True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass

    def silent_for(self, rank: int) -> float:
        """Seconds since rank `rank` (1..W-1) was last heard from."""
        self._listen()
        return time.monotonic() - self._last_heard[rank - 1]

    def _problem(self) -> str | None:
        for rank, p in enumerate(self.procs, start=1):
            code = p.poll()
            log = getattr(p, "log_path", "?")
            stopped_on_signal = code in (128 + signal.SIGTERM, 128 + signal.SIGINT)  # preempted with rank 0
            if code not in (None, 0) and not stopped_on_signal and (rank, code) not in self.failed:
                self.failed.append((rank, code))
                return f"rank {rank} exited with status {code} (its log: {log}); the run was stopped"
            allowed = self.silence_timeout_s if self._heard[rank - 1] else max(self.silence_timeout_s, STARTUP_S)
            if code is None and self._heartbeats and self.silent_for(rank) > allowed:
                return (f"rank {rank} (pid {p.pid}) was silent for {self.silence_timeout_s:g} s "
                        f"(trainer.collective_timeout_s; stopped or hung, its log: {log}); the run was stopped")
        return None

    def _watchdog(self) -> None:
        while not self._stop.wait(HEARTBEAT_PERIOD_S):
            problem = self._problem()
            if problem is None:
                continue
            self.failure = problem
            self._kill()  # rank 0's collective with the stopped rank fails now; train() writes FAILED
            if not self._stop.wait(GRACE_S):  # a backend that would block forever is cut off
                print(f"error: {problem}", file=sys.stderr)
                if self._on_give_up is not None:
                    try:
                        self._on_give_up(problem)
                    except Exception:  # noqa: BLE001 - exiting matters more than the marker here
                        pass
                os._exit(1)
            return

    def explain(self) -> str | None:
        """Why the run failed as far as the workers tell (an exited or silent rank), or None."""
        if self.failure is None:
            problem = self._problem()
            if problem is None and self._heartbeats:  # rank 0's collective timed out first: who was silent?
                silent = [r for r in range(1, len(self.procs) + 1) if self.procs[r - 1].poll() is None
                          and self.silent_for(r) > 5 * HEARTBEAT_PERIOD_S and self._heard[r - 1]]
                if silent:
                    problem = (f"rank {silent[0]} (pid {self.procs[silent[0] - 1].pid}) was silent for "
                               f"{self.silent_for(silent[0]):.0f} s (stopped or hung, its log: "
                               f"{getattr(self.procs[silent[0] - 1], 'log_path', '?')}); the run was stopped")
            self.failure = problem
        return self.failure

    def _kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # SIGKILL ends a stopped (SIGSTOP) process too

    def wait(self, timeout: float = 120.0) -> list[int]:
        """Wait for the workers to finish; returns their exit codes."""
        self._stop.set()
        for fd in self._heartbeats:
            try:
                os.close(fd)
            except OSError:
                pass
        self._heartbeats = []
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


def launch_local_workers(world_size: int, config_path: Path, ckpt_path: Path | None, log_dir: Path,
                         silence_timeout_s: float = 300.0, on_give_up=None) -> LocalWorkers:
    """Start ranks 1..world_size-1 on this node and make this process rank 0 (sets the env);
    each rank's heartbeat pipe feeds the watchdog (`LocalWorkers`)."""
    global _threads_before_launch
    # Lightning divides the cores among local ranks (torch threads and OMP_NUM_THREADS): undone
    # by end_local_run, or the next single-process job of a multirun would run on fewer threads
    _threads_before_launch = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
    port = _free_port()
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size), "NODE_RANK": "0"}
    os.environ.update(base, LOCAL_RANK="0", RANK="0")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, heartbeats = [], []
    for rank in range(1, world_size):
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        env = {**os.environ, **base, "LOCAL_RANK": str(rank), "RANK": str(rank), HEARTBEAT_ENV: str(write_end)}
        log_path = log_dir / f"rank{rank}.log"
        with open_append(log_path, "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "backbone_lab.worker", str(config_path), str(ckpt_path or "-")],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, pass_fds=(write_end,))
        os.close(write_end)
        p.log_path = log_path
        procs.append(p)
        heartbeats.append(read_end)
    return LocalWorkers(procs, heartbeats, silence_timeout_s, on_give_up)


def start_heartbeat() -> None:
    """In a launched rank: write one byte a second to the launcher's heartbeat pipe (a daemon
    thread; silent when this process is stopped or frozen, which is the point)."""
    fd = os.environ.pop(HEARTBEAT_ENV, None)
    if fd is None:
        return
    fd = int(fd)
    os.set_blocking(fd, False)

    def beat() -> None:
        while True:
            try:
                os.write(fd, b".")
            except BlockingIOError:
                pass
            except OSError:  # the launcher is gone
                return
            time.sleep(HEARTBEAT_PERIOD_S)

    threading.Thread(target=beat, daemon=True, name="heartbeat").start()


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
