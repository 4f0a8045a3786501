"""Logger factories used by `conf/logger/*.yaml`, and what a run tells its loggers beyond training.

W&B runs offline when no API key is configured, so `wandb sync <run_dir>/wandb/offline-run-*`
can upload them later; every job gets its own run (id, group, job_type, tags, config), and a
resumed run (`resume=auto`) continues its W&B run (the id is kept in `<run_dir>/wandb_run_id.txt`).

After the analysis, `publish_analysis` puts the geometry into each logger: the headline numbers
(`analysis_numbers`: PC1 raw / row-norm, k95, drift, f_b, ρ, update and gradient alignment, ...)
into the W&B run summary — the columns of a W&B runs table — and the analysis figures as W&B
images, the time series a(t), ‖r(t)‖, f_b(t), ρ(t) and update |cos| as W&B tables with line plots;
other Lightning loggers get the numbers through `log_metrics`. A sweep job's W&B config
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
    elif offline:
        # said to wandb.init itself: Lightning's offline flag only sets WANDB_MODE, which wandb
        # ignores once an earlier run in this process (e.g. a compare run) has set up its session
        kwargs["mode"] = "offline"
    logger = WandbLogger(**kwargs)
    _drop_anonymous_setting(logger)
    if config:
        from omegaconf import DictConfig, OmegaConf

        # Hydra hands the node over as a DictConfig, which Lightning would log as one string
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config)
    return logger


def _drop_anonymous_setting(logger: WandbLogger) -> None:
    """Lightning's WandbLogger always hands `anonymous=None` to `wandb.init`, and wandb >= 0.19
    warns about any value of that retired setting ("The anonymous setting has no effect"): drop it."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)


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
    """The geometry of a run as flat `analysis/<name>` numbers: every number the analysis stages
    declare (`analysis.stage.Number`, user stages included), by its one name, plus the snapshots
    used and the analysis flags (comma-separated). Absent values are left out."""
    s = summary
    numbers = {**s.numbers(), "snapshots_used": s.snapshots_used}
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


SERIES_TITLES = {  # name -> (title, {column: what it is, with its unit})
    "decomposition": ("Backbone decomposition over training", {
        "a": "a(t) = ⟨θ(t) − θ(anchor), v_b⟩ (parameter units)",
        "norm_r": "‖r(t)‖, transverse residual (parameter units)",
        "backbone_frac": "f_b(t) = a²/‖Δθ‖² (0–1)"}),
    "rotation": ("Rolling-backbone rotation", {"rho": "ρ(t), adjacent-window |cos| (0–1)"}),
    "update_alignment": ("Update–backbone alignment", {"abs_cos": "|cos(u, v_b)| of consecutive checkpoint updates"}),
}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def analysis_series(summary, run: RunDir) -> dict[str, tuple[list[str], list[list[float]]]]:
    """The analysis time series as tables, name -> (columns, rows), the first column the optimizer step:

    - ``decomposition``: step, a(t), ‖r(t)‖, f_b(t) (analysis ``timeseries.csv``);
    - ``rotation``: ρ between adjacent rolling windows at the mean of their centres (``rolling.csv``);
    - ``update_alignment``: |cos(u, v_b)| of consecutive checkpoint updates of the analysis subset at
      their midpoint (``update_alignment.csv``).
    A table whose file the analysis did not write (a skipped stage) is left out."""
    folder = Path(summary.out_dir) if summary.out_dir else run.analysis
    out: dict[str, tuple[list[str], list[list[float]]]] = {}
    ts = _csv_rows(folder / "timeseries.csv")
    if ts:
        out["decomposition"] = (["step", "a", "norm_r", "backbone_frac"],
                                [[int(r["step"]), _number(r["a_t"]), _number(r["norm_r_t"]), _number(r["backbone_frac"])]
                                 for r in ts])
    roll = _csv_rows(folder / "rolling.csv")
    rho = [[(_number(a["centre"]) + _number(b["centre"])) / 2, _number(a["rho_next"])] for a, b in zip(roll, roll[1:])]
    if rho:
        out["rotation"] = (["step", "rho"], rho)
    subset = summary.subset
    ua = [[int(r["step"]), _number(r["abs_cos"])] for r in _csv_rows(folder / "update_alignment.csv")
          if r["variant"] == "consecutive" and (subset is None or r["subset"] == subset)]
    if ua:
        out["update_alignment"] = (["step", "abs_cos"], ua)
    return out


def _wandb_series(wandb, series: dict) -> dict:
    """W&B tables of the series and one line plot per quantity (`analysis/series/...`, `analysis/plots/...`)."""
    out = {}
    for name, (columns, rows) in series.items():
        table = wandb.Table(columns=columns, data=rows)
        out[f"analysis/series/{name}"] = table
        title, labels = SERIES_TITLES.get(name, (name, {}))
        for col in columns[1:]:
            out[f"analysis/plots/{name}/{col}"] = wandb.plot.line(table, columns[0], col,
                                                                  title=f"{title}: {labels.get(col, col)}")
    return out


def publish_analysis(loggers: list, summary, run: RunDir, step: int | None = None) -> None:
    """Put a finished analysis into the loggers: numbers in the W&B run summary; the time series
    a(t), ‖r(t)‖, f_b(t), ρ(t), update |cos| as W&B tables with line plots and the figures as W&B
    images (one history row at `trainer/global_step` = `step`, the run's step count, so the
    run's last global step is its number of optimizer steps); `log_metrics` of the numbers for
    any other Lightning logger."""
    numbers = analysis_numbers(summary)
    scalars = {k: v for k, v in numbers.items() if not isinstance(v, str)}
    if step is None:
        step = summary.steps[-1] if summary.steps else None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            experiment = logger.experiment
            experiment.summary.update(numbers)
            row = _wandb_series(wandb, analysis_series(summary, run))
            row.update({key: wandb.Image(str(path), caption=path.name) for key, path in analysis_figures(summary, run).items()})
            if step is not None:
                row["trainer/global_step"] = int(step)
            if row:
                experiment.log(row)
        elif scalars and hasattr(logger, "log_metrics"):
            logger.log_metrics(scalars, step=step)
            logger.save()


def log_final_step(loggers: list, step: int) -> None:
    """One W&B history row at `trainer/global_step` = `step` (the run's optimizer steps): Lightning
    logs a step's training metrics at the count of steps *before* it (999 for the last step of a
    1000-step run); `publish_analysis` does this when an analysis is published."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.log({"trainer/global_step": int(step)})
