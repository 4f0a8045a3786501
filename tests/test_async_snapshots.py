"""Snapshots written off the training thread (`snapshots.async_write`, the default).

The background writer produces the same bytes as a synchronous one, in step order; training
waits only when the writer is more than one snapshot behind; a writer error fails the run with
that error (no hang); in-process readers see the pending snapshots; and a `kill -9` while a
snapshot is still pending resumes (`resume=auto`) to the snapshots of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from backbone_lab.trajectory.background_writer import BackgroundSnapshotWriter
from backbone_lab.trajectory.store import TrajectoryReader, TrajectoryWriter
from conftest import REPO, compose_config

LAYOUT = [("a.weight", (4, 3)), ("b.weight", (5,))]


def _snapshot(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in LAYOUT}


def _bin_files(trajectory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(trajectory.glob("snap_*.bin"))}


def _listed(trajectory: Path) -> list[dict]:
    return json.loads((trajectory / "manifest.json").read_text())["snapshots"]


# ----------------------------------------------------------------------------- the writer
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_background_writer_writes_the_bytes_of_a_synchronous_writer(tmp_path, dtype):
    import torch

    sync = TrajectoryWriter(tmp_path / "sync", tensors=LAYOUT, dtype=dtype)
    background = BackgroundSnapshotWriter(TrajectoryWriter(tmp_path / "async", tensors=LAYOUT, dtype=dtype))
    for step in (0, 1, 5, 10, 15):
        named = {k: torch.from_numpy(v) for k, v in _snapshot(step).items()}
        sync.append(step, named)
        background.submit(step, named)
        for t in named.values():
            t.add_(1.0)  # the caller's tensors change right after submit: the copy is what is written
    background.close()
    assert _bin_files(tmp_path / "async") == _bin_files(tmp_path / "sync")
    assert _listed(tmp_path / "async") == _listed(tmp_path / "sync")
    assert [s["step"] for s in _listed(tmp_path / "async")] == [0, 1, 5, 10, 15]
    assert not list((tmp_path / "async").glob("*.tmp"))


class _HeldWriter(TrajectoryWriter):
    """A writer whose `write` waits for a go signal per snapshot and records the order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started: list[int] = []
        self.go = threading.Semaphore(0)

    def write(self, snap):
        self.started.append(snap.step)
        self.go.acquire()
        return super().write(snap)


def _submit_in_thread(writer: BackgroundSnapshotWriter, step: int) -> threading.Thread:
    th = threading.Thread(target=writer.submit, args=(step, _snapshot(step)), daemon=True)
    th.start()
    return th


def test_training_waits_only_when_the_writer_is_more_than_one_snapshot_behind(tmp_path):
    held = _HeldWriter(tmp_path / "t", tensors=LAYOUT)
    writer = BackgroundSnapshotWriter(held)
    writer.submit(1, _snapshot(1))
    deadline = time.monotonic() + 10
    while held.started != [1] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert held.started == [1]  # being written
    second = _submit_in_thread(writer, 2)
    second.join(timeout=5)
    assert not second.is_alive()  # one snapshot behind: no wait
    third = _submit_in_thread(writer, 3)
    third.join(timeout=0.3)
    assert third.is_alive()  # two behind: the training thread waits
    held.go.release()  # step 1 done -> 2 starts, 3 is queued
    third.join(timeout=5)
    assert not third.is_alive()
    for _ in range(2):
        held.go.release()
    writer.close()
    assert held.started == [1, 2, 3] and TrajectoryReader(tmp_path / "t").steps == [1, 2, 3]


def test_a_writer_error_is_raised_on_the_submitting_thread_and_never_hangs(tmp_path):
    class Broken(TrajectoryWriter):
        def write(self, snap):
            if snap.step == 2:
                raise OSError(28, "simulated: no space left on device")
            return super().write(snap)

    writer = BackgroundSnapshotWriter(Broken(tmp_path / "t", tensors=LAYOUT))
    writer.submit(1, _snapshot(1))
    writer.submit(2, _snapshot(2))
    with pytest.raises(OSError, match="simulated: no space left") as first:
        writer.flush()
    with pytest.raises(OSError) as again:
        writer.submit(3, _snapshot(3))
    assert again.value is first.value  # the same exception, every time
    assert writer.close(raise_errors=False) is first.value
    assert TrajectoryReader(tmp_path / "t").steps == [1]  # nothing after the failure was written


def test_a_reader_in_the_same_process_waits_for_pending_snapshots(tmp_path):
    held = _HeldWriter(tmp_path / "t", tensors=LAYOUT)
    for _ in range(3):
        held.go.release()
    held.append(0, _snapshot(0))  # the manifest exists
    writer = BackgroundSnapshotWriter(held)
    writer.submit(1, _snapshot(1))
    threading.Timer(0.2, held.go.release).start()  # the write of step 1 finishes later
    assert TrajectoryReader(tmp_path / "t").steps == [0, 1]  # opening the reader waited for it
    writer.close()


# ----------------------------------------------------------------------------- in training
STEPS = ["train.max_steps=20", "train.eval_every=10", "train.ckpt_every=10", "snapshots.every=5", "analyze=false"]


def _cfg(tmp: Path, name: str, extra=()):
    return compose_config(["debug=tiny", f"run_dir={tmp / name}", f"paths.cache_dir={tmp / 'cache'}", *STEPS, *extra])


@pytest.fixture(scope="module")
def sync_reference(tmp_path_factory):
    """An uninterrupted run with synchronous snapshot writes."""
    from backbone_lab.train import train

    tmp = tmp_path_factory.mktemp("async_snapshots")
    assert train(_cfg(tmp, "sync", ["snapshots.async_write=false"]))["status"] == "done"
    return tmp, tmp / "sync" / "trajectory"


def test_async_and_sync_training_runs_write_identical_snapshot_files(sync_reference):
    from backbone_lab.train import train

    tmp, reference = sync_reference
    assert train(_cfg(tmp, "async", ["snapshots.async_write=true"]))["status"] == "done"
    got = tmp / "async" / "trajectory"
    assert _bin_files(got) == _bin_files(reference) and len(_bin_files(got)) == 6
    assert _listed(got) == _listed(reference)


@pytest.mark.timeout(300)
def test_a_snapshot_write_error_fails_the_run_with_that_error(sync_reference, monkeypatch):
    from backbone_lab.run_markers import read_marker
    from backbone_lab.train import train

    tmp, _ = sync_reference
    real = TrajectoryWriter.write
    failing_thread = []

    def write(self, snap):
        if snap.step == 5:
            failing_thread.append(threading.current_thread().name)
            raise OSError(5, "simulated: I/O error while writing the snapshot of step 5")
        return real(self, snap)

    monkeypatch.setattr(TrajectoryWriter, "write", write)
    with pytest.raises(OSError, match="simulated: I/O error while writing the snapshot of step 5"):
        train(_cfg(tmp, "broken"))
    assert failing_thread and failing_thread[0].startswith("snapshot-writer")  # it was written in the background
    marker, payload = read_marker(tmp / "broken")
    assert marker == "FAILED" and "simulated: I/O error" in payload["error"]
    assert TrajectoryReader(tmp / "broken").steps == [0, 1]
    assert not (tmp / "broken" / "checkpoints" / "last.ckpt").exists()  # no checkpoint past a lost snapshot


class KillWhileSnapshotPending(L.Callback):
    """kill -9 of this process right after the snapshot of `step` was handed to the background
    writer, whose write of it (and of any later step) is held back: the snapshot is pending."""

    def __init__(self, step: int):
        self.step = step

    def on_train_start(self, trainer, pl_module):
        from backbone_lab.trajectory.callback import TrajectorySnapshotCallback

        snapshots = next(cb for cb in trainer.callbacks if isinstance(cb, TrajectorySnapshotCallback))
        writer, real = snapshots.writer, snapshots.writer.write

        def held(snap):
            if snap.step >= self.step:
                time.sleep(3600)
            return real(snap)

        writer.write = held

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _cli(tmp: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    import torch

    # the reference ran in this process: the subprocess computes with the same number of threads
    # (a different intra-op split changes the last bits of the sums)
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp / "out"), "PYTHONPATH": str(REPO / "tests"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, "-m", "backbone_lab", "debug=tiny", *STEPS, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_kill_9_with_a_pending_async_snapshot_resumes_to_the_uninterrupted_snapshots(sync_reference, tmp_path):
    root, reference = sync_reference
    cache = f"paths.cache_dir={root / 'cache'}"
    killed = _cli(tmp_path, "run_name=k", cache, "+callbacks.kill._target_=test_async_snapshots.KillWhileSnapshotPending",
                  "+callbacks.kill.step=15")
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "out" / "runs" / "k"
    assert TrajectoryReader(run).steps == [0, 1, 5, 10]  # 15 was pending; the checkpoint (step 10) was not ahead
    resumed = _cli(tmp_path, "run_name=k", "resume=auto", cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _bin_files(run / "trajectory") == _bin_files(reference)
    assert _listed(run / "trajectory") == _listed(reference)
