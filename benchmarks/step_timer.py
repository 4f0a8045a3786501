"""Time a window of optimizer steps inside a Lightning `fit`, warm-up excluded.

`StepTimer(warmup, steps)` starts the clock when optimizer step `warmup + 1` begins and stops
it when step `warmup + steps` has finished (after the optimizer update), synchronising the
device at both ends so queued GPU work is counted where it belongs. Works with gradient
accumulation (a step = `accumulate` micro-batches). Also records the warm-up's wall time
(compilation, allocator growth, first-call overheads) and, on CUDA, the peak memory of the
timed window.
"""

from __future__ import annotations

import time

import lightning as L
import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on `device` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.fit_start = self.t0 = self.t1 = None
        self.peak_bytes: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.t0 is None and trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.t1 is None and trainer.global_step == self.warmup + self.steps:
            synchronize(pl_module.device)
            self.t1 = time.perf_counter()
            if pl_module.device.type == "cuda":
                self.peak_bytes = torch.cuda.max_memory_allocated(pl_module.device)

    @property
    def seconds(self) -> float:
        """Wall time of the timed steps."""
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the timed window did not complete (fewer steps ran than warmup + steps)")
        return self.t1 - self.t0

    @property
    def warmup_seconds(self) -> float:
        return (self.t0 or 0.0) - (self.fit_start or 0.0)
