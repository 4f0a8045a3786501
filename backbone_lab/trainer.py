"""Building Lightning's `Trainer` from the `train` and `trainer` groups, and the world-size checks.

Their schemas live in `loop_config.py` (no Lightning import there; `trainer.LoopConfig` and
`trainer.TrainerConfig` remain importable from here):

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

import lightning as L
from hydra.utils import instantiate

from backbone_lab.checkpoint_io import DurableCheckpointIO
from backbone_lab.distributed import external_launcher_detected
from backbone_lab.errors import ConfigError
from backbone_lab.loop_config import (  # noqa: F401 - the schemas live there (Lightning-free)
    DEFAULT_COLLECTIVE_TIMEOUT_S, NOT_TRAINER_ARGUMENTS, LoopConfig, TrainerConfig, collective_timeout_s)


def _apply_collective_timeout(trainer: L.Trainer, seconds: float) -> None:
    """The process group of a multi-process strategy is created with this timeout (Lightning's
    DDP/FSDP/ModelParallel strategies read `_timeout` when they initialise it)."""
    from datetime import timedelta

    if hasattr(trainer.strategy, "_timeout"):
        trainer.strategy._timeout = timedelta(seconds=seconds)


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
