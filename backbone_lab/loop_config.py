"""Schemas of the optimisation loop (`train` group) and of the hardware it runs on (`trainer` group).

* `LoopConfig` (`conf/train/`): what is computed — steps, accumulation, clipping, evaluation /
  checkpoint / logging cadence, the divergence bound, `torch.compile`.
* `TrainerConfig` (`conf/trainer/`): where — accelerator, devices, nodes, strategy, precision; a
  `_target_` node that `trainer.build_trainer` instantiates as Lightning's `Trainer`.

Plain dataclasses (no Lightning import), so `config_schema` registers them without pulling in
the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class LoopConfig:
    """The optimisation loop (PAPER_MAP §3)."""

    max_steps: int = 1000
    """Optimizer steps."""
    accumulate: int = 1
    """Micro-batches accumulated per optimizer step on each rank."""
    grad_clip: float = 1.0
    """Global gradient-norm clip after accumulation (0 = off)."""
    eval_every: int = 100
    """Evaluate at step 1, every this many steps and at the end."""
    ckpt_every: int = 250
    """Write checkpoints/last.ckpt every this many steps (and at the final step)."""
    keep_checkpoints: bool = False
    """Also keep checkpoints/stepNNNNNN.ckpt of every checkpoint step (e.g. to reheat from step S)."""
    log_every: int = 10
    """Log (and synchronise the device-side train-loss and divergence check) every this many steps."""
    divergence_loss: Optional[float] = None
    """Stop cleanly (run marked diverged) when a micro-batch loss exceeds this or is not finite."""
    compile: bool = False
    """torch.compile the forward + loss (GPU speed-up)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "accumulate", "eval_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"train.grad_clip must be a finite number >= 0, got {self.grad_clip}")
        if self.divergence_loss is not None and not self.divergence_loss > 0:
            raise ValueError(f"train.divergence_loss must be > 0 or null, got {self.divergence_loss}")


DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0
NOT_TRAINER_ARGUMENTS = ("collective_timeout_s",)  # TrainerConfig fields that Lightning's Trainer does not take


def collective_timeout_s(trainer_cfg) -> float:
    """The `trainer.collective_timeout_s` of a trainer node (the default where it is absent)."""
    return float(trainer_cfg.get("collective_timeout_s", DEFAULT_COLLECTIVE_TIMEOUT_S) or DEFAULT_COLLECTIVE_TIMEOUT_S)


@dataclass
class TrainerConfig:
    """Lightning `Trainer` arguments that say where the loop runs (`conf/trainer/`)."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    """cpu | gpu | auto."""
    devices: Any = 1
    """Processes per node (int), a list of device ids, or auto."""
    num_nodes: int = 1
    """Nodes (>1 needs a cluster launcher: SLURM or torchrun)."""
    strategy: Any = "auto"
    """auto | ddp | a `_target_` node (e.g. FSDP2 through ModelParallelStrategy)."""
    precision: str = "32-true"
    """32-true | bf16-mixed | 16-mixed | ... (Lightning's names)."""
    deterministic: bool = True
    """Deterministic kernels (CPU runs are then bit-reproducible)."""
    debug: dict[str, Any] = field(default_factory=dict)
    """Lightning's debugging switches passed on to its `Trainer` (conf/debug/: fdr, profiler, overfit),
    e.g. `{fast_dev_run: 3}`, `{profiler: simple}`, `{overfit_batches: 2}`; empty by default (an
    empty node leaves a run's config identity unchanged)."""
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    """Seconds a collective (all-reduce, barrier) may wait for a rank before the run fails, and
    how long a locally launched rank may stay silent before the launcher's watchdog stops the run
    naming it (`distributed.LocalWorkers`). Not passed to Lightning's Trainer. The default (5 min)
    is far above the slowest step, evaluation or snapshot of the paper-size run; a resumed run
    may change it (a neutral key)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.collective_timeout_s, (int, float)) and math.isfinite(self.collective_timeout_s)
                and self.collective_timeout_s > 0):
            raise ValueError(f"trainer.collective_timeout_s must be a finite number of seconds > 0, "
                             f"got {self.collective_timeout_s!r}")

