"""`train(cfg)`: build data module, module, trainer, callbacks and loggers from a composed config, fit, analyse.

Importable and testable without the CLI (`python -m backbone_lab` is a thin Hydra shell around
it). Returns a dict of headline numbers (the value a Hydra sweeper could optimise is
`final_val_loss`). In the order of the code below:

Every part is named by a config node, none by this file: the data module (`datamodule`) and the
Lightning module (`module`) are `_partial_` `_target_` nodes called with the typed configs
(`components.py`); optimizer, trainer, callbacks and loggers are `_target_` nodes too. Only the
protocol's own callbacks (evaluation, snapshots, checkpoints, preemption) are always added here.

1. `check_config`: every concept's typed config is built from its node (`typed`), the component
   classes are checked against their arguments, the optimizer is tried on a dummy parameter,
   data files and the memory of one micro-batch are checked, the trainer is built and its world
   size checked: bad input ends here, in one line, before any
   data preparation or any write (the CLI runs the same function before Hydra makes a folder);
2. rank 0 locks and claims the run folder (`prepare_run_dir`: same config, stale temp files,
   the newest loadable checkpoint); a one-node multi-process run then starts its other ranks
   (`distributed.launch_local_workers`);
3. data, model, fit under `preemption.signals_handled` (SIGTERM/SIGINT: checkpoint and exit at
   the next step boundary); `last.ckpt` is always the final step; rank 0 alone writes markers,
   runs the analysis and talks to W&B.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import warnings
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from backbone_lab.callbacks.evaluation import EvaluationCallback, eval_steps
from backbone_lab.checkpoint_io import checkpoint_step, resume_checkpoint
from backbone_lab.components import (DATAMODULE_ARGUMENTS, MODULE_ARGUMENTS, build_datamodule, build_module,
                                     check_component)
from backbone_lab.config_schema import build, schemas
from backbone_lab.distributed import end_local_run, env_global_rank, launch_local_workers
from backbone_lab.durable import atomic_write_text, remove_stale_temps
from backbone_lab.errors import ConfigError, RankFailure, RunDirError, user_facing_errors
from backbone_lab.input_checks import check_folder_name, check_inputs, check_run_settings
from backbone_lab.lit_module import DivergenceError
from backbone_lab.preemption import Preempted, PreemptionCallback, requested, signals_handled, signals_interrupt
from backbone_lab.run_dir import RunDir
from backbone_lab.run_identity import RESUME_ALSO_NEUTRAL, differences
from backbone_lab.run_lock import run_lock
from backbone_lab.run_markers import write_marker
from backbone_lab.trainer import build_trainer, check_world, collective_timeout_s, needs_local_launch
from backbone_lab.trajectory.callback import TrajectorySnapshotCallback
from backbone_lab.trajectory.store import TrajectoryError

log = logging.getLogger("backbone_lab")


def typed(cfg: DictConfig) -> dict:
    """group -> its schema dataclass built from the node (`__post_init__` checks every value);
    works on a composed config and on a plain one loaded from a run's config.yaml. The trainer
    node is a `_target_` node: `build_trainer` instantiates it."""
    return {group: build(group, cfg.get(group)) for group in schemas() if group != "trainer"}


def resolve_run_dir(cfg: DictConfig) -> Path:
    """`cfg.run_dir` if set, else Hydra's output dir of this job."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError as err:  # Hydra not initialised (e.g. train() called from a notebook)
        raise ConfigError("set run_dir=<folder> when calling train() outside the CLI") from err


def check_optimizer(factory) -> None:
    """Build the optimizer on a dummy parameter: bad arguments fail now, in one line."""
    dummy = [{"params": [torch.zeros(2, 2, requires_grad=True)], "kind": "matrix"},
             {"params": [torch.zeros(2, 2, requires_grad=True)], "kind": "trunk"},
             {"params": [torch.zeros(2, requires_grad=True)], "kind": "vector", "weight_decay": 0.0}]
    try:
        factory(dummy)
    except Exception as err:  # noqa: BLE001 - torch raises ValueError/TypeError for bad arguments
        func = getattr(factory, "func", factory)
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
        name = f"{func.__module__}.{func.__qualname__}" if hasattr(func, "__qualname__") else str(func)
        raise ConfigError(f"optimizer {name}({args}) rejected its arguments: {str(err).strip().splitlines()[0]}; "
                          "fix the optimizer.* values") from None


def check_run_name(cfg: DictConfig) -> None:
    """`run_name` names one folder under the output root: no path separators, no `..`."""
    check_folder_name("run_name", cfg.get("run_name", ""))


def never_trained(run: RunDir) -> bool:
    """No checkpoint and no snapshot in the run folder: an earlier start failed before training."""
    has_ckpt = run.checkpoints.is_dir() and any(run.checkpoints.glob("*.ckpt"))
    has_snapshots = run.trajectory.is_dir() and any(run.trajectory.iterdir())
    return not has_ckpt and not has_snapshots


def prepare_run_dir(cfg: DictConfig, run: RunDir) -> Path | None:
    """Check the run dir is ours (the caller holds its lock); save the config; remove temp files a
    killed writer left; return the checkpoint to resume from (or None)."""
    run.root.mkdir(parents=True, exist_ok=True)
    resume = cfg.get("resume", "never")
    if resume not in ("never", "auto"):
        raise ConfigError(f"resume must be 'never' or 'auto', got {resume!r}")
    if run.config.exists() and never_trained(run):  # a failed start: its config must not block the fix
        log.info("%s holds a start that never trained (no checkpoint, no snapshot): its config is replaced", run.root)
    elif run.config.exists():
        diff = differences(OmegaConf.load(run.config), cfg, extra=RESUME_ALSO_NEUTRAL)
        if diff:
            shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in diff[:3]) + (" ..." if len(diff) > 3 else "")
            if all(k.startswith("trainer.") for k, _, _ in diff):
                raise RunDirError(f"{run.root} was trained with other trainer settings ({shown}): resume with the "
                                  "same world size and strategy (the data stream and sliced snapshots are laid out "
                                  "per rank), or choose another run_name")
            raise RunDirError(f"{run.root} already holds a different run (config differs at {shown}); "
                              "choose another run_name/run_dir, or delete that folder")
        if resume != "auto" and run.trajectory.exists():
            raise RunDirError(f"{run.root} already holds this run's snapshots; pass resume=auto to continue it")
    for folder in (run.root, run.trajectory, run.checkpoints, run.diagnostics, run.analysis):
        for stale in remove_stale_temps(folder):
            log.info("removed %s (left by a killed writer)", stale)
    ckpt = resume_checkpoint(run)[0] if resume == "auto" else None
    atomic_write_text(run.config, OmegaConf.to_yaml(cfg, resolve=True))
    return ckpt


def _instantiate_nodes(node: DictConfig | None) -> list:
    """Instantiate every `_target_` node of a group (callbacks, loggers)."""
    if not node:
        return []
    try:
        return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]
    except Exception as err:  # noqa: BLE001 - a typo in a callback/logger node
        raise ConfigError(f"{str(err).strip().splitlines()[0]}") from None


def _quiet_third_party_logs() -> None:
    # Lightning prints accelerator facts and advertising through its own handler (shown twice
    # under Hydra's logging); keep warnings only. A torch-internal deprecation is also noise.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _reset_process_state() -> None:
    # A multirun executes jobs in one process: W&B and Lightning leave global state behind.
    for var in ("WANDB_MODE", "PL_GLOBAL_SEED", "WANDB_RUN_ID", "WANDB_RESUME"):
        os.environ.pop(var, None)


def _protocol_callbacks(conf: dict, run: RunDir, cfg: DictConfig) -> list[L.Callback]:
    """Evaluation, snapshots and checkpoints: part of the protocol, always on."""
    loop, snap = conf["train"], conf["snapshots"]
    callbacks: list[L.Callback] = [EvaluationCallback(eval_steps(loop.max_steps, loop.eval_every), run.eval_metrics)]
    if snap.enabled:
        meta = {"run_dir": str(run.root), "model": asdict(conf["model"]), "seed": int(cfg.seed)}
        callbacks.append(TrajectorySnapshotCallback(run.trajectory, snap, loop.max_steps, meta))
    callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run.checkpoints, filename="step{step:06d}", auto_insert_metric_name=False,  # = RunDir.step_checkpoint
        save_last=True, save_top_k=-1 if loop.keep_checkpoints else 0,
        every_n_train_steps=loop.ckpt_every, save_on_train_epoch_end=False))
    callbacks.append(PreemptionCallback())
    return callbacks


def check_accelerator_present(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without a CUDA GPU: say so, and how to run on the CPU, before
    Lightning's own error ("Error in call to target ... Trainer")."""
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "cpu"))
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    name = str(cfg.get("experiment_name") or "")
    tiny = Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{name}_tiny.yaml"
    what = f"+experiment={name}" if name and name != "default" else "this run"
    cpu_twin = f", or its CPU twin +experiment={name}_tiny" if tiny.exists() else ""
    raise ConfigError(f"{what} needs a GPU (trainer.accelerator={accelerator}) and this machine has none "
                      f"(torch.cuda.is_available() is False): add trainer=cpu to run it on the CPU (slow at "
                      f"paper size){cpu_twin}")


def already_complete(cfg: DictConfig, run: RunDir) -> dict | None:
    """`resume=auto` on this very run (same config) that finished (`DONE`): its result, marked
    "already complete" — nothing is trained or analysed again (re-analysis is `analyze`'s job)."""
    if cfg.get("resume") != "auto" or not run.config.exists():
        return None
    from backbone_lab.run_markers import read_marker

    marker = read_marker(run.root)
    if not marker or marker[0] != "DONE":
        return None
    if differences(OmegaConf.load(run.config), cfg, extra=RESUME_ALSO_NEUTRAL):
        return None  # prepare_run_dir says how it differs
    return {**marker[1], "run_dir": str(run.root), "status": "already complete"}
def _check_stage_names(analysis_cfg) -> None:
    from backbone_lab.analysis.registry import check_stage_names

    try:
        check_stage_names(analysis_cfg)
    except ValueError as err:
        raise ConfigError(f"analysis: {err}") from None


def check_config(cfg: DictConfig) -> tuple[dict, object, list]:
    """Every check that needs no data and writes nothing — types and ranges (the typed configs),
    the data module's and Lightning module's classes (`components.check_component`), the
    optimizer built on a dummy parameter, the run name, the data files and the memory of one
    micro-batch, the callback nodes, the trainer and its world size. Returns (typed configs,
    optimizer factory, user callbacks). The CLI runs it before Hydra creates any folder."""
    _quiet_third_party_logs()
    check_run_settings(cfg)
    check_accelerator_present(cfg)
    conf = typed(cfg)
    _check_stage_names(conf["analysis"])
    check_component(cfg.get("datamodule"), "datamodule", DATAMODULE_ARGUMENTS)
    check_component(cfg.get("module"), "module", MODULE_ARGUMENTS)
    optimizer = instantiate(cfg.optimizer)
    check_optimizer(optimizer)
    if not cfg.get("run_dir"):
        check_run_name(cfg)
    check_inputs(conf, str(cfg.trainer.get("accelerator", "cpu")))
    callbacks = _instantiate_nodes(cfg.get("callbacks"))
    probe = build_trainer(cfg.trainer, conf["train"], [], loggers=[], run_dir=cfg.get("run_dir") or ".")
    check_world(probe, cfg.trainer, conf["data"].n_eval, conf["data"].n_val)
    return conf, optimizer, callbacks


def train(cfg: DictConfig, ckpt_path: Path | None = None) -> dict:
    """Train one run as described by `cfg`; returns headline numbers (also in `<run_dir>/DONE`).

    `ckpt_path` is only passed to ranks started by `launch_local_workers` (rank 0 decided it).
    Raises `Preempted` after a SIGTERM/SIGINT once a resumable checkpoint is saved.
    """
    _reset_process_state()
    _quiet_third_party_logs()
    run = RunDir(resolve_run_dir(cfg))
    with open_dict(cfg):
        cfg.run_dir = str(run.root)  # loggers and callbacks interpolate ${run_dir}
    conf, optimizer, callbacks = check_config(cfg)
    if (done := already_complete(cfg, run)) is not None:  # every rank reads the same marker: all stop here
        return done
    callbacks = _protocol_callbacks(conf, run, cfg) + callbacks
    loop = conf["train"]
    rank = env_global_rank()
    trainer = build_trainer(cfg.trainer, loop, callbacks, loggers=[], run_dir=run.root)
    world = check_world(trainer, cfg.trainer, conf["data"].n_eval, conf["data"].n_val)

    with ExitStack() as stack:
        stack.enter_context(signals_handled())
        if rank == 0:
            stack.enter_context(run_lock(run))
            ckpt_path = prepare_run_dir(cfg, run)
        workers = None
        result: dict = {"run_dir": str(run.root), "status": "done", "world_size": world}
        try:
            if needs_local_launch(trainer):
                workers = launch_local_workers(
                    world, run.config, ckpt_path, run.root / "logs", silence_timeout_s=collective_timeout_s(cfg.trainer),
                    on_give_up=lambda why: _safe_marker(run, "FAILED", {"error": f"RankFailure: {why}"}))
                trainer = build_trainer(cfg.trainer, loop, callbacks, loggers=[], run_dir=run.root)  # sees its rank
            if rank == 0:
                loggers = _instantiate_nodes(cfg.get("logger"))
                for logger in loggers:
                    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
                trainer.loggers = loggers
            result.update(_fit(cfg, conf, run, trainer, optimizer, ckpt_path, rank))
            if rank == 0:
                write_marker(run.root, "DONE", result)
        except (Preempted, KeyboardInterrupt) as err:
            if rank == 0:
                _safe_marker(run, "INTERRUPTED", {"error": f"{type(err).__name__}: {err}",
                                                  "step": getattr(err, "step", None),
                                                  "during": getattr(err, "during", "training")})
            raise
        except BaseException as err:
            # a rank that died or went silent (rank 0's own one-line errors stay what they are)
            why = workers.explain() if workers is not None and not isinstance(err, user_facing_errors()) else None
            if workers is not None:
                workers.terminate()
            if rank == 0:
                _safe_marker(run, "FAILED", {"error": f"RankFailure: {why}" if why else f"{type(err).__name__}: {err}",
                                             "traceback": traceback.format_exc()})
            if why:
                raise RankFailure(why) from err
            raise
        finally:
            if workers is not None:
                workers.wait()
                end_local_run()
            _finish_wandb()
    return {**result}


def _safe_marker(run: RunDir, name: str, payload: dict) -> None:
    """Write a failure marker without masking the error that led here (e.g. a full disk)."""
    try:
        write_marker(run.root, name, payload)
    except OSError as err:
        log.error("could not write the %s marker in %s: %s", name, run.root, err)


def _fit(cfg: DictConfig, conf: dict, run: RunDir, trainer: L.Trainer, optimizer, ckpt_path, rank: int) -> dict:
    from backbone_lab.analysis.summary import Summary
    from backbone_lab.execution_record import write_execution_record
    from backbone_lab.loggers import log_final_step, publish_analysis

    loop, snap = conf["train"], conf["snapshots"]
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg.datamodule, conf["data"], seq_len=conf["model"].seq_len, seed=int(cfg.seed))
    datamodule.setup("fit")
    if rank == 0:
        datamodule.save_run_files(run.root)
        write_execution_record(run, trainer)
    try:
        model_config = conf["model"].with_vocab(datamodule.vocab_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    module = build_module(cfg.module, model_config, optimizer, conf["schedule"], conf["objective"], loop)
    if cfg.get("init_from"):
        from backbone_lab.init_from import load_initial_weights

        load_initial_weights(module.model, cfg.init_from, cfg.get("init_step"))
    start_step = checkpoint_step(ckpt_path) if ckpt_path else 0
    datamodule.set_start_step(start_step, loop.accumulate)
    if requested():  # a signal during data preparation: nothing new to save
        raise Preempted(requested(), start_step)

    out: dict = {}
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DivergenceError as err:
        log.warning("%s; snapshots written so far are kept and analysed", err)
        out.update(status="diverged", diverged_at_step=err.step, diverged_loss=err.loss)
        trainer.save_checkpoint(run.diverged_checkpoint, weights_only=False)  # the full state (see below)
    out["train_seconds"] = time.perf_counter() - t0
    out["steps_done"] = int(trainer.global_step)
    if out.get("status") != "diverged" and trainer.global_step % loop.ckpt_every:
        # last.ckpt is always the final (or stopping) step. weights_only=False: the full training state (loops,
        # callbacks, optimizer) that resume=auto needs; left unset, Lightning logs that it defaulted to False
        trainer.save_checkpoint(run.last_checkpoint, weights_only=False)
    preemption = next(c for c in trainer.callbacks if isinstance(c, PreemptionCallback))
    if preemption.stopped_at is not None:
        raise Preempted(preemption.signum, preemption.stopped_at)
    if rank != 0:
        return out
    out.update(_final_eval_numbers(run))
    published = False
    if cfg.get("analyze", True) and snap.enabled:
        try:
            with signals_interrupt(out["steps_done"], "analysis"):  # SIGTERM: stop now, exit 143, not DONE
                summary = Summary(_analyse(run.root, conf["analysis"]))
            out.update(summary.headline())
            publish_analysis(trainer.loggers, summary, run, step=int(trainer.global_step))
            published = True
        except TrajectoryError as err:
            if out.get("status") != "diverged":
                raise
            # diverged before enough snapshots for the analysis: still a clean, diverged run
            log.warning("no analysis of the diverged run: %s", err)
            out["analysis_skipped"] = str(err)
    if not published:  # no analysis row at the final step: say where the run ended
        log_final_step(trainer.loggers, int(trainer.global_step))
    return out


def _analyse(run_dir: Path, analysis_cfg) -> dict:
    from backbone_lab.analysis.run_analysis import run_analysis

    log.info("analysing the trajectory in %s", RunDir(run_dir).trajectory)
    return run_analysis(run_dir, analysis_cfg)


def _final_eval_numbers(run: RunDir) -> dict:
    import math

    from backbone_lab.metrics_csv import read_rows

    if not run.eval_metrics.exists():
        return {}
    rows = read_rows(run.eval_metrics)
    if not rows:
        return {}
    finite = [r["p_ood"] for r in rows if math.isfinite(r["p_ood"])]
    return {
        "final_step": rows[-1]["step"],
        "final_val_loss": rows[-1]["val_loss"],
        "final_p_in": rows[-1]["p_in"],
        "final_p_ood": rows[-1]["p_ood"],
        "best_p_ood": max(finite) if finite else math.nan,
    }


def _finish_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - closing a logger must never mask the real outcome
        pass
