"""Logger factories used by `conf/logger/*.yaml`, and what a run tells its loggers beyond training.

W&B runs offline when no API key is configured, so `wandb sync <run_dir>/wandb/offline-run-*`
can upload them later; every job gets its own run (id, group, job_type, tags, config), and a
resumed run (`resume=auto`) continues its W&B run (the id is kept in `<run_dir>/wandb_run_id.txt`).

After the analysis, `publish_analysis` puts the geometry into each logger: the headline numbers
(`analysis_numbers`: PC1 raw / row-norm, k95, drift, f_b, ρ, update and gradient alignment, ...)
into the W&B run summary — the columns of a W&B runs table — and the analysis figures as W&B
images; other Lightning loggers get the numbers through `log_metrics`. A sweep job's W&B config
holds `swept`: only the keys its sweep varies, with typed values (`sweep_values`).
"""

from __future__ import annotations

import math
import secrets
import string
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from backbone_lab.run_dir import RunDir
from backbone_lab.durable import atomic_write_text
from backbone_lab.wandb_credentials import wandb_has_credentials  # noqa: F401 - re-exported (logger factories, tests)


def run_id(save_dir: str | Path) -> str:
    """The W&B run id of the run folder `save_dir`: made once, reused when the run resumes."""
    path = Path(save_dir) / "wandb_run_id.txt"
    if path.exists():
        return path.read_text().strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, new_id + "\n")
    return new_id


def make_wandb_logger(
    project: str = "backbone_lab",
    save_dir: str = ".",
    mode: str = "auto",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    config: dict | None = None,
    entity: str | None = None,
) -> WandbLogger:
    """WandbLogger; `mode` auto = online with credentials, offline otherwise."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode must be auto|online|offline|disabled, got {mode!r}")
    offline = mode == "offline" or (mode == "auto" and not wandb_has_credentials())
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = dict(project=project, save_dir=save_dir, offline=offline, name=name, group=group,
                  job_type=job_type, tags=list(tags or []), entity=entity, reinit="finish_previous",
                  id=run_id(save_dir), resume="allow")
    if mode == "disabled":
        kwargs["mode"] = "disabled"
    logger = WandbLogger(**kwargs)
    if config:
        from omegaconf import DictConfig, OmegaConf

        # Hydra hands the node over as a DictConfig, which Lightning would log as one string
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config)
    return logger


# --------------------------------------------------------------------------- sweep jobs
def sweep_values(cfg, sweep_dir: str | Path, job_overrides: dict[str, str]) -> dict[str, Any]:
    """The keys the sweep varies, with this job's typed values (for W&B's `swept` config).

    Which keys vary comes from the sweep's own record, `<sweep_dir>/multirun.yaml` (Hydra writes
    it before the first job): the command-line overrides that sweep (`a=1,2`, `range(...)`, ...)
    and the grid of `hydra.sweeper.params` with more than one value. Constant overrides of the same
    command line are left out. Values come from the job's composed config (`optimizer.betas` →
    [0.9, 0.8], `optimizer.lr` → 0.001, `objective.lambda_schedule` → [[0, 2.0]]); a config-group
    choice (`optimizer=adamw`) keeps its option name. Without multirun.yaml, every job override
    in `job_overrides` counts as swept.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    keys = _swept_keys(Path(sweep_dir) / "multirun.yaml")
    out: dict[str, Any] = {}
    for key, text in job_overrides.items():
        if keys is not None and key not in keys:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig) or (value is None and text not in ("null", "None")):
            out[key] = text  # a group choice (or a key the config does not hold): the option name
        elif isinstance(value, ListConfig):
            out[key] = OmegaConf.to_container(value, resolve=True)
        else:
            out[key] = value
    return out


def _swept_keys(multirun_yaml: Path) -> set[str] | None:
    """Keys that take several values in the sweep recorded by `multirun_yaml` (None: no record)."""
    if not multirun_yaml.exists():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    hydra = OmegaConf.load(multirun_yaml).get("hydra") or {}
    lines = [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
    params = (hydra.get("sweeper") or {}).get("params") or {}
    lines += [f"{k}={v}" for k, v in params.items()]
    parser = OverridesParser.create()
    keys = set()
    for line in lines:
        try:
            override = parser.parse_overrides([line])[0]
        except Exception:  # noqa: BLE001 - an override this Hydra cannot parse is not a sweep we can name
            continue
        if override.is_sweep_override():
            keys.add(override.get_key_element().lstrip("+~"))
    return keys


# --------------------------------------------------------------------------- the analysis
def analysis_numbers(summary) -> dict[str, float | int | str]:
    """The geometry of a run as flat `analysis/<name>` numbers (from the typed `Summary`).

    PC1 raw / row-normalised (%), k95, drift ‖θ(final) − θ(anchor)‖, f_b (final and mean), ρ
    (mean, min), the phase overlap |⟨v_E, v_L⟩|, update alignment of the analysis (global v_b,
    all and early), gradient / update alignment recorded in training and their ratio, the noise
    floor, snapshots used, and the analysis flags (comma-separated). Absent values are left out.
    """
    s = summary
    numbers = {
        "pc1_rownorm_pct": s.pc1_rownorm_pct,
        "pc1_raw_pct": s.pc1_raw_pct,
        "pc2_rownorm_pct": s.pc2_rownorm_pct,
        "k95_rownorm": s.k95_rownorm,
        "k95_raw": s.k95_raw,
        "drift": s.drift_final,
        "backbone_frac_final": s.backbone_frac_final,
        "backbone_frac_mean": s.backbone_frac_mean,
        "rho_mean": s.rho_mean,
        "rho_min": s.rho_min,
        "phase_overlap_vE_vL": s.phase_overlap,
        "update_abs_cos": s.update_mean_abs_cos,
        "update_abs_cos_early": s.update_mean_abs_cos_early,
        "grad_abs_cos_recorded": s.grad_mean_abs_cos,
        "update_abs_cos_recorded": s.update_abs_cos_recorded,
        "update_over_grad": s.update_over_grad,
        "noise_floor": s.noise_floor,
        "snapshots_used": s.snapshots_used,
        "reheat_max_abs_a_rel_change": s.reheat_max_abs_a_rel_change,
    }
    out: dict[str, float | int | str] = {
        f"analysis/{k}": v for k, v in numbers.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    out["analysis/flags"] = ",".join(s.flag_codes) or "none"
    return out


def analysis_figures(summary, run: RunDir) -> dict[str, Path]:
    """`analysis/figures/<stem>` -> PNG path of every figure the analysis wrote."""
    folder = Path(summary.out_dir) if summary.out_dir else run.analysis
    names = list(summary.get("figures") or [])
    return {f"analysis/figures/{Path(n).stem}": folder / n for n in names if (folder / n).exists()}


def publish_analysis(loggers: list, summary, run: RunDir) -> None:
    """Put a finished analysis into the loggers: numbers in the W&B run summary, figures as W&B
    images (one history row), `log_metrics` of the numbers for any other Lightning logger."""
    numbers = analysis_numbers(summary)
    scalars = {k: v for k, v in numbers.items() if not isinstance(v, str)}
    step = summary.steps[-1] if summary.steps else None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            experiment = logger.experiment
            experiment.summary.update(numbers)
            figures = analysis_figures(summary, run)
            if figures:
                experiment.log({key: wandb.Image(str(path), caption=path.name) for key, path in figures.items()})
        elif scalars and hasattr(logger, "log_metrics"):
            logger.log_metrics(scalars, step=step)
            logger.save()
