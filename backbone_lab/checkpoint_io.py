"""Checkpoints that survive full disks, kills and planted files.

`DurableCheckpointIO` is the Trainer's checkpoint plugin: `last.ckpt` is written to a temp file in
the same folder, fsync'ed and renamed over the old one, which is kept as `prev.ckpt` until the
new one is durable (`durable.atomic_file`); free space is checked first. Lightning's default
writes into a temp dir and *copies* the file in (another file system on clusters): a full disk
then left a truncated `last.ckpt` over the only good one.

Every checkpoint is read with `torch.load(weights_only=True)`: a file is data, never code
(a pickle payload planted in `last.ckpt` fails to load instead of running).

`resume_checkpoint(run)` picks the newest checkpoint that actually loads (`last.ckpt`, else
`prev.ckpt`, with a warning); a run whose checkpoints all fail to load is refused in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from backbone_lab.durable import atomic_file, ensure_free_space
from backbone_lab.errors import RunDirError
from backbone_lab.run_dir import RunDir

log = logging.getLogger("backbone_lab")


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors inside a nested checkpoint dict (the bulk of its file size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's content; data only (`weights_only=True`)."""
    return torch.load(path, map_location=map_location, weights_only=True)


class DurableCheckpointIO(TorchCheckpointIO):
    """Atomic, fsync'ed checkpoints with the previous one kept until the new one is durable."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_free_space(path.parent, _nbytes(checkpoint) + (1 << 20), f"checkpoint {path.name}")
        run = RunDir(path.parent.parent)
        keep_previous = run.previous_checkpoint if path == run.last_checkpoint else None
        with atomic_file(path, previous=keep_previous) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location or "cpu")


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a checkpoint was taken at (mmap'ed: the tensors are not read)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def resume_checkpoint(run: RunDir) -> tuple[Path | None, int]:
    """(the newest checkpoint of `run` that loads, its step); (None, 0) when there is none.

    A `last.ckpt` that does not load (truncated by a crash of an older version, planted, ...)
    falls back to `prev.ckpt` with a warning; if checkpoints exist but none loads, the run is
    refused (RunDirError) rather than silently restarted from step 0.
    """
    problems = []
    for path in (run.last_checkpoint, run.previous_checkpoint):
        if not path.exists():
            continue
        try:
            step = checkpoint_step(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file: try the next one
            problems.append(f"{path.name}: {type(err).__name__}: {str(err).strip().splitlines()[0][:120]}")
            log.warning("checkpoint %s does not load (%s); trying the previous one", path, problems[-1])
            continue
        if problems:
            log.warning("resuming from %s (step %d) instead", path, step)
        return path, step
    if problems:
        raise RunDirError(f"{run.checkpoints}: no checkpoint loads ({'; '.join(problems)}); "
                          "delete the folder to start over, or restore a checkpoint")
    return None, 0
