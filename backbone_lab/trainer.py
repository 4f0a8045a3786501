"""The optimisation loop (`train` group) and the hardware it runs on (`trainer` group).

* `LoopConfig` (`conf/train/`): what is computed — steps, accumulation, clipping, evaluation /
  checkpoint / logging cadence, the divergence bound, `torch.compile`.
* `TrainerConfig` (`conf/trainer/`: cpu, gpu, ddp, ddp_cpu, fsdp): where — accelerator,
  devices, nodes, strategy, precision. It is a `_target_` node: `build_trainer` instantiates
  Lightning's `Trainer` from it, adding the loop's settings and the callbacks/loggers.

Global batch = `data.micro_batch_size` × world size × `train.accumulate`; W ranks with
micro-batch b follow the trajectory of one process with micro-batch b accumulated W times
(`data.examples.ResumableSampler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import lightning as L
from hydra.utils import instantiate

from backbone_lab.checkpoint_io import DurableCheckpointIO
from backbone_lab.distributed import external_launcher_detected
from backbone_lab.errors import ConfigError


@dataclass
class LoopConfig:
    """The optimisation loop (SPEC §3)."""

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


def _apply_collective_timeout(trainer: L.Trainer, seconds: float) -> None:
    """The process group of a multi-process strategy is created with this timeout (Lightning's
    DDP/FSDP/ModelParallel strategies read `_timeout` when they initialise it)."""
    from datetime import timedelta

    if hasattr(trainer.strategy, "_timeout"):
        trainer.strategy._timeout = timedelta(seconds=seconds)


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


def build_trainer(trainer_cfg, loop: LoopConfig, callbacks: list, loggers: list, run_dir) -> L.Trainer:
    """Lightning's Trainer from the `trainer` node plus the loop's settings, rooted at the run
    folder (`trainer.default_root_dir`, where callbacks write); one-line ConfigError for
    settings Lightning rejects."""
    from omegaconf import DictConfig, OmegaConf

    not_lightning = (*NOT_TRAINER_ARGUMENTS, "debug")  # debug: Lightning's switches, passed on one by one
    if isinstance(trainer_cfg, DictConfig):
        node = trainer_cfg.get("debug")
        debug = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        lightning_cfg = OmegaConf.masked_copy(trainer_cfg, [k for k in trainer_cfg if k not in not_lightning])
    else:
        debug = dict(trainer_cfg.get("debug") or {})
        lightning_cfg = {k: v for k, v in dict(trainer_cfg).items() if k not in not_lightning}
    try:
        trainer = instantiate(
            lightning_cfg,
            **debug,
            max_steps=loop.max_steps,
            accumulate_grad_batches=loop.accumulate,
            gradient_clip_val=loop.grad_clip or None,
            gradient_clip_algorithm="norm",
            log_every_n_steps=loop.log_every,
            logger=loggers or False,
            callbacks=callbacks,
            default_root_dir=str(run_dir),
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # the resumable sampler already gives each rank its share
            enable_model_summary=False,
            enable_checkpointing=True,
            plugins=[DurableCheckpointIO()],  # atomic last.ckpt (+ prev.ckpt), weights_only loads
            enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks),
        )
    except Exception as err:  # noqa: BLE001 - Lightning raises several types for bad settings
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"trainer: {text} (check trainer.accelerator/devices/num_nodes/strategy)") from err
    _apply_collective_timeout(trainer, collective_timeout_s(trainer_cfg))
    return trainer


def _is_multiprocess_strategy(trainer: L.Trainer) -> bool:
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    return isinstance(trainer.strategy, (DDPStrategy, FSDPStrategy, ModelParallelStrategy))


def world_size(trainer: L.Trainer) -> int:
    """Processes of the run, known before `fit` (Lightning sets `trainer.world_size` only then)."""
    return trainer.num_devices * trainer.num_nodes if _is_multiprocess_strategy(trainer) else 1


def check_world(trainer: L.Trainer, trainer_cfg, n_eval: int, n_val: int) -> int:
    """Refuse impossible distributed settings in one line (before any data preparation);
    returns the world size."""
    world = world_size(trainer)
    strategy = trainer_cfg.get("strategy")
    named = strategy if isinstance(strategy, str) else str(getattr(strategy, "get", lambda *_: "")("_target_", ""))
    if world == 1 and (named.startswith("ddp") or "parallel" in named.lower() or "fsdp" in named.lower()):
        raise ConfigError(f"trainer strategy {named!r} with one device: set trainer.devices=N (N > 1) or use "
                          "trainer=cpu / trainer=gpu for a single process")
    if trainer.num_nodes > 1 and not external_launcher_detected():
        raise ConfigError(f"trainer.num_nodes={trainer.num_nodes} needs a cluster launcher: submit with "
                          "hydra/launcher=slurm (or srun / torchrun); a plain command runs one node")
    for name, n in (("data.n_eval", n_eval), ("data.n_val", n_val)):
        if n % world:
            raise ConfigError(f"{name}={n} cannot be split over {world} ranks: make it a multiple of {world} "
                              "(every rank evaluates an equal share)")
    return world


def needs_local_launch(trainer: L.Trainer) -> bool:
    """A multi-process strategy on one node that nobody has launched yet (we start the ranks)."""
    return world_size(trainer) > 1 and not external_launcher_detected()
