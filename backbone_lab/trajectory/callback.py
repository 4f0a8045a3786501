"""Lightning callback that dumps the trunk into a `TrajectoryWriter` (SPEC §3.2, §4.1-4.2).

Snapshots are taken at the initialisation (step 0, before any update), after step 1, every
`every` steps, inside optional dense ranges, and at `extra_steps`; "step t" means the weights
after optimizer step t. The writer makes each file atomically and never overwrites a snapshot,
so a resumed run re-dumping a step it already has is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L

from backbone_lab.trajectory.store import TrajectoryWriter
from backbone_lab.trunk import named_subset


def snapshot_steps(
    max_steps: int,
    every: int,
    dense: Sequence[Sequence[int]] = (),
    extra_steps: Sequence[int] = (),
    include_init: bool = True,
    include_step1: bool = True,
) -> list[int]:
    """Sorted snapshot steps in [0, max_steps].

    `dense` = [[from, to, every], ...] adds every `every` steps within [from, to] (inclusive),
    e.g. the SGD-control cadence [[600, 2000, 50], [2000, 4000, 100]] (SPEC §4.1).
    The final step is always included.
    """
    if every <= 0:
        raise ValueError(f"snapshots.every must be positive, got {every}")
    steps = set(range(every, max_steps + 1, every)) | {max_steps}
    if include_init:
        steps.add(0)
    if include_step1 and max_steps >= 1:
        steps.add(1)
    for rng in dense:
        if len(rng) != 3 or rng[2] <= 0:
            raise ValueError(f"snapshots.dense entries must be [from, to, every>0], got {list(rng)}")
        lo, hi, step = (int(x) for x in rng)
        steps.update(range(lo, min(hi, max_steps) + 1, step))
    steps.update(int(s) for s in extra_steps if 0 <= int(s) <= max_steps)
    return sorted(steps)


class TrajectorySnapshotCallback(L.Callback):
    """Writes `named_subset(model, subset)` into `<run_dir>/trajectory` at `steps`."""

    def __init__(self, directory: str | Path, steps: Sequence[int], subset: str = "trunk",
                 dtype: str = "float32", meta: dict | None = None):
        self.directory = Path(directory)
        self.steps = set(int(s) for s in steps)
        self.subset, self.dtype, self.meta = subset, dtype, meta or {}
        self._writer: TrajectoryWriter | None = None
        self._last_step = -1

    def _write(self, pl_module: L.LightningModule, step: int) -> None:
        if self._writer is None:
            self._writer = TrajectoryWriter(
                self.directory, dtype=self.dtype, subset=self.subset, meta=self.meta
            )
        self._writer.append(step, named_subset(pl_module.model, self.subset))
        self._last_step = step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and 0 in self.steps:
            self._write(pl_module, 0)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Fires after every micro-batch; the optimizer step counter moves once per accumulation.
        step = trainer.global_step
        if step != self._last_step and step in self.steps:
            self._write(pl_module, step)
        self._last_step = step
