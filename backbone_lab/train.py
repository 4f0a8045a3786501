"""`train(cfg)`: build data, model, callbacks and loggers from a composed config, fit, analyse.

Importable and testable without the CLI (`python -m backbone_lab` is a thin Hydra shell around
it). Returns a dict of headline numbers (the value a Hydra sweeper could optimise is
`final_val_loss`).
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from backbone_lab.callbacks.evaluation import EvaluationCallback, eval_steps
from backbone_lab.config_schema import drop_dotted_keys
from backbone_lab.errors import ConfigError, RunDirError
from backbone_lab.lit_module import BackboneLitModule, DivergenceError
from backbone_lab.model import GPTConfig, PRESETS
from backbone_lab.run_markers import write_marker
from backbone_lab.trajectory.callback import TrajectorySnapshotCallback, snapshot_steps
from backbone_lab.trajectory.store import TrajectoryError

log = logging.getLogger("backbone_lab")

# Keys that may change between a run and its resumption without making it a different run.
RESUME_NEUTRAL_KEYS = ("resume", "analyze", "run_dir", "logger", "callbacks", "paths", "data.num_workers")


def resolve_run_dir(cfg: DictConfig) -> Path:
    """`cfg.run_dir` if set, else Hydra's output dir of this job."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError as err:  # Hydra not initialised (e.g. train() called from a notebook)
        raise ConfigError("set run_dir=<folder> when calling train() outside the CLI") from err


def build_model_config(model_cfg: DictConfig, vocab_size: int) -> GPTConfig:
    if model_cfg.preset not in PRESETS and model_cfg.preset != "custom":
        raise ConfigError(
            f"unknown model preset {model_cfg.preset!r}: choose model=tiny|small|paper or a file in conf/model/"
        )
    keys = ("n_layer", "d_model", "n_head", "d_ff", "seq_len", "dropout")
    kwargs = {k: model_cfg[k] for k in keys}
    kwargs["vocab_size"] = int(model_cfg.vocab_size or vocab_size)
    if kwargs["vocab_size"] < vocab_size:
        raise ConfigError(
            f"model.vocab_size={kwargs['vocab_size']} is smaller than the tokenizer's {vocab_size}"
        )
    try:
        return GPTConfig(**kwargs)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _comparable(cfg: DictConfig) -> dict:
    return drop_dotted_keys(OmegaConf.to_container(cfg, resolve=True), RESUME_NEUTRAL_KEYS + ("run_name",))


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Check the run dir is ours; save the config; return the checkpoint to resume from (or None)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    resume = cfg.get("resume", "never")
    if resume not in ("never", "auto"):
        raise ConfigError(f"resume must be 'never' or 'auto', got {resume!r}")
    if saved.exists():
        previous = OmegaConf.load(saved)
        if _comparable(previous) != _comparable(cfg):
            raise RunDirError(
                f"{run_dir} already holds a different run (its config.yaml differs); "
                "choose another run_name/run_dir, or delete that folder"
            )
        if resume != "auto" and (run_dir / "trajectory").exists():
            raise RunDirError(
                f"{run_dir} already holds this run's snapshots; pass resume=auto to continue it"
            )
    OmegaConf.save(cfg, saved, resolve=True)
    return ckpt if (resume == "auto" and ckpt.exists()) else None


def _instantiate_nodes(node: DictConfig | None) -> list:
    """Instantiate every `_target_` node of a group (callbacks, loggers), skipping disabled ones."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def _quiet_third_party_logs() -> None:
    # Lightning prints accelerator facts and advertising through its own handler (shown twice
    # under Hydra's logging); keep warnings only. A torch-internal deprecation is also noise.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _reset_process_state() -> None:
    # A multirun executes jobs in one process: W&B and Lightning leave global state behind.
    for var in ("WANDB_MODE", "PL_GLOBAL_SEED", "WANDB_RUN_ID", "WANDB_RESUME"):
        os.environ.pop(var, None)


def train(cfg: DictConfig) -> dict:
    """Train one run as described by `cfg`; returns headline numbers (also in `<run_dir>/DONE`)."""
    _reset_process_state()
    _quiet_third_party_logs()
    run_dir = resolve_run_dir(cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)  # loggers and callbacks interpolate ${run_dir}
    ckpt_path = prepare_run_dir(cfg, run_dir)
    if cfg.get("seed") is None:
        raise ConfigError("seed must be set (an integer; 0 is fine)")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    from backbone_lab.data.datamodule import BackboneDataModule

    data_kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = BackboneDataModule(
        **data_kwargs, seq_len=int(cfg.model.seq_len), seed=int(cfg.seed)
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.save_run_files(run_dir)
    model_cfg = build_model_config(cfg.model, datamodule.vocab_size)

    max_steps = int(cfg.train.max_steps)
    schedule_total = int(cfg.schedule.total or max_steps)
    module = BackboneLitModule(
        model_cfg,
        optimizer=instantiate(cfg.optimizer),
        lambda_schedule=OmegaConf.to_container(cfg.objective.lambda_schedule),
        warmup=int(cfg.schedule.warmup),
        total_steps=schedule_total,
        lr_floor=float(cfg.schedule.floor),
        run_dir=run_dir,
        divergence_loss=cfg.train.divergence_loss,
        compile=bool(cfg.train.compile),
    )
    if cfg.get("init_from"):
        from backbone_lab.init_from import load_initial_weights

        load_initial_weights(module.model, cfg.init_from, cfg.get("init_step"))

    accumulate = int(cfg.train.accumulate)
    start_step = _checkpoint_step(ckpt_path) if ckpt_path else 0
    datamodule.set_start_step(start_step, accumulate)

    snap = cfg.snapshots
    callbacks: list[L.Callback] = [
        EvaluationCallback(eval_steps(max_steps, int(cfg.train.eval_every)), run_dir / "eval_metrics.csv")
    ]
    if snap.enabled:
        steps = snapshot_steps(max_steps, int(snap.every), snap.dense, snap.extra_steps,
                               bool(snap.include_init), bool(snap.include_step1))
        meta = {"run_dir": str(run_dir), "model": OmegaConf.to_container(cfg.model), "seed": int(cfg.seed)}
        callbacks.append(TrajectorySnapshotCallback(run_dir / "trajectory", steps, snap.subset, snap.dtype, meta))
    callbacks.append(
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step{step:06d}", save_last=True,
            save_top_k=0, every_n_train_steps=int(cfg.train.ckpt_every), save_on_train_epoch_end=False,
        )
    )
    callbacks += _instantiate_nodes(cfg.get("callbacks"))
    loggers = _instantiate_nodes(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=float(cfg.train.grad_clip) or None,
        gradient_clip_algorithm="norm",
        precision=cfg.train.precision,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        deterministic=bool(cfg.train.deterministic),
        logger=loggers or False,
        callbacks=callbacks,
        log_every_n_steps=int(cfg.train.log_every),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the resumable sampler already defines the stream
        enable_model_summary=False,
        enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks),
    )
    result: dict = {"run_dir": str(run_dir), "status": "done"}
    t0 = time.perf_counter()
    try:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except DivergenceError as err:
            log.warning("%s; snapshots written so far are kept and analysed", err)
            result.update(status="diverged", diverged_at_step=err.step, diverged_loss=err.loss)
            trainer.save_checkpoint(run_dir / "checkpoints" / "diverged.ckpt")
        result["train_seconds"] = time.perf_counter() - t0
        result["steps_done"] = int(trainer.global_step)
        result.update(_final_eval_numbers(run_dir))
        if cfg.get("analyze", True) and snap.enabled:
            try:
                summary = _analyse(run_dir, cfg.get("analysis"))
                result.update(_headline(summary))
            except TrajectoryError as err:
                if result["status"] != "diverged":
                    raise
                # diverged before enough snapshots for the analysis: still a clean, diverged run
                log.warning("no analysis of the diverged run: %s", err)
                result["analysis_skipped"] = str(err)
        write_marker(run_dir, "DONE", result)
    except BaseException as err:
        write_marker(run_dir, "FAILED", {"error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()})
        raise
    finally:
        _finish_wandb()
    return result


def analysis_config(node: DictConfig | dict | None):
    """`AnalysisConfig` from the run config's `analysis` node (unknown keys -> ConfigError)."""
    from backbone_lab.analysis.config import AnalysisConfig

    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    try:
        return AnalysisConfig(**data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"analysis config: {err}") from err


def _analyse(run_dir: Path, node) -> dict:
    from backbone_lab.analysis.run_analysis import run_analysis

    log.info("analysing the trajectory in %s", run_dir / "trajectory")
    return run_analysis(run_dir, analysis_config(node))


def _checkpoint_step(ckpt_path: Path) -> int:
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    return int(state.get("global_step", 0))


def _final_eval_numbers(run_dir: Path) -> dict:
    from backbone_lab.metrics_csv import read_rows

    path = run_dir / "eval_metrics.csv"
    if not path.exists():
        return {}
    rows = read_rows(path)
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


def _headline(summary: dict) -> dict:
    """A few analysis numbers for the DONE marker and the console (full summary in analysis/)."""
    pca, dec = summary.get("pca", {}), summary.get("decomposition", {})
    out = {
        "pc1_rownorm_pct": pca.get("rownorm", {}).get("pc1_pct"),
        "pc1_raw_pct": pca.get("raw", {}).get("pc1_pct"),
        "k95_raw": pca.get("raw", {}).get("k95"),
        "drift_norm_final": dec.get("norm_delta_final"),
        "backbone_frac_final": dec.get("backbone_frac_final"),
        "backbone_frac_mean": dec.get("backbone_frac_mean"),
        "rho_mean": summary.get("rolling", {}).get("rho_mean"),
        "report": str(Path(summary.get("out_dir", "")) / "report.md"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _finish_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - closing a logger must never mask the real outcome
        pass

