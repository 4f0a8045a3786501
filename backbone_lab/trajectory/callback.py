"""Lightning callback that dumps the trunk into a `TrajectoryWriter` (PAPER_MAP §3.2, §4.1-4.2).

Snapshots are taken at the initialisation (step 0, before any update), after step 1, every
`every` steps, inside optional dense ranges, and at `extra_steps`; "step t" means the weights
after optimizer step t. The writer makes each file atomically and never overwrites a snapshot,
so a resumed run re-dumping a step it already has is a no-op.

Several ranks: with `sliced` every rank writes its row slice of every tensor (1/W of the bytes,
in parallel; under FSDP exactly the shard it owns, so the full trunk is never gathered on one
device); otherwise rank 0 writes whole snapshots (data-parallel ranks hold identical weights).
A schedule-free optimizer's snapshots hold its evaluation weights x (`optim.evaluation_weights`),
the averaged iterate the run produces; checkpoints keep the training state for exact resume.

With `async_write` (the default) the training thread only copies the trunk to host memory and a
`BackgroundSnapshotWriter` thread converts, checksums and writes it (same bytes as a synchronous
write). The callback flushes that writer before every checkpoint is saved (a checkpoint never
claims a step whose snapshot is not durable), at the end of training and on an exception, and
raises a writer error on the training thread at the next batch. The first snapshot of a new
trajectory is written synchronously, so its manifest exists from then on, as with sync writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from backbone_lab.optim import evaluation_weights
from backbone_lab.trajectory import layout
from backbone_lab.trajectory.background_writer import BackgroundSnapshotWriter
from backbone_lab.trajectory.store import TrajectoryWriter
from backbone_lab.trunk import named_subset, subset_layout
from backbone_lab.trajectory.snapshot_config import SnapshotConfig, snapshot_steps  # noqa: F401 - torch-free

log = logging.getLogger(__name__)


def local_rows(param, rank: int, world_size: int):
    """This rank's row slice of a parameter: the local shard of an FSDP2 (DTensor) parameter, or
    rows `layout.row_range` of a replicated one."""
    data = param.detach()
    if hasattr(data, "to_local"):
        return data.to_local()
    if data.ndim == 0:
        return data if rank == 0 else data.new_zeros(0)
    lo, hi = layout.row_range(data.shape[0], rank, world_size)
    return data[lo:hi]


class TrajectorySnapshotCallback(L.Callback):
    """Writes the configured subset of `pl_module.model` into `directory` at the configured steps."""

    def __init__(self, directory: str | Path, config: SnapshotConfig, max_steps: int, meta: dict[str, Any] | None = None):
        self.directory = Path(directory)
        self.config = config
        self.steps = set(config.steps(max_steps))
        self.meta = meta or {}
        self._writer: TrajectoryWriter | None = None
        self._background: BackgroundSnapshotWriter | None = None
        self._last_step = -1

    @property
    def writer(self) -> TrajectoryWriter | None:
        """This rank's trajectory writer (None before training starts, or on a rank that writes nothing)."""
        return self._writer

    def _open(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        sharded = any(hasattr(p, "to_local") for p in pl_module.model.parameters())
        self._sliced = world > 1 and (self.config.sliced is not False or sharded)
        self._rank, self._world = rank, world
        if self.config.sketch_dim:
            self._open_sketch(pl_module, rank, world, sharded)
            return
        if world > 1 and not self._sliced and rank != 0:
            return  # rank 0 writes whole snapshots
        self._writer = TrajectoryWriter(
            self.directory, tensors=subset_layout(pl_module.model, self.config.subset), dtype=self.config.dtype,
            subset=self.config.subset, meta=self.meta,
            rank=rank if self._sliced else 0, world_size=world if self._sliced else 1)
        self._sync_next = not self._writer.steps  # a new trajectory: its first snapshot makes the manifest
        if self.config.async_write:
            self._background = BackgroundSnapshotWriter(self._writer)

    def _open_sketch(self, pl_module: L.LightningModule, rank: int, world: int, sharded: bool) -> None:
        """A sketched trajectory (`SketchingWriter`): rank 0 sketches; on the CPU in the background
        writer thread (the training thread only copies the trunk), on a GPU on the device."""
        from backbone_lab.series.sketch import SketchSpec
        from backbone_lab.trajectory.sketch_writer import SketchingWriter

        if sharded:
            raise ValueError("snapshots.sketch_dim needs unsharded parameters (not FSDP); use dense sliced snapshots")
        self._sliced = False
        if rank != 0:
            return  # data-parallel ranks hold identical weights
        c = self.config
        self._writer = SketchingWriter(self.directory, SketchSpec(c.sketch_dim, c.sketch_seed, c.sketch_nnz),
                                       subset_layout(pl_module.model, c.subset), subset=c.subset, meta=self.meta)
        self._sync_next = not self._writer.steps
        on_gpu = any(p.is_cuda for p in pl_module.model.parameters())
        if c.async_write and not on_gpu:
            self._background = BackgroundSnapshotWriter(self._writer)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_step = step
        if self._writer is None:
            return
        with evaluation_weights(trainer.optimizers[0] if trainer.optimizers else None):  # schedule-free: x
            params = named_subset(pl_module.model, self.config.subset)
            if self._sliced:
                params = {n: local_rows(p, self._rank, self._world) for n, p in params.items()}
            if self._background is None or self._sync_next:
                self._writer.append(step, params)
                self._sync_next = False
            else:
                self._background.submit(step, params)  # the host copy happens here, inside the context

    def flush(self) -> None:
        """Block until every snapshot taken so far is durable; raise a writer error."""
        if self._background is not None:
            self._background.flush()

    def _close(self, raise_errors: bool = True) -> BaseException | None:
        background, self._background = self._background, None
        return background.close(raise_errors) if background is not None else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._open(trainer, pl_module)
        if trainer.global_step == 0 and 0 in self.steps:
            self._write(trainer, pl_module, 0)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Fires after every micro-batch; the optimizer step counter moves once per accumulation.
        if self._background is not None:
            self._background.raise_if_failed()
        step = trainer.global_step
        if step != self._last_step and step in self.steps:
            self._write(trainer, pl_module, step)
        self._last_step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.flush()  # the checkpoint's step never runs ahead of the durable snapshots

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # make what was taken durable; the run already fails with `exception`
        error = self._close(raise_errors=False)
        if error is not None and error is not exception:
            log.error("snapshot writer failed too: %s: %s", type(error).__name__, error)
