"""Logger factories used by `conf/logger/*.yaml`.

W&B runs offline when no API key is configured, so `wandb sync <run_dir>/wandb/offline-run-*`
can upload them later; every job gets its own run (id, group, job_type, tags, config), and a
resumed run (`resume=auto`) continues its W&B run (the id is kept in `<run_dir>/wandb_run_id.txt`).
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def run_id(save_dir: str | Path) -> str:
    """The W&B run id of the run folder `save_dir`: made once, reused when the run resumes."""
    path = Path(save_dir) / "wandb_run_id.txt"
    if path.exists():
        return path.read_text().strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    path.write_text(new_id + "\n")
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
        logger.log_hyperparams(config)
    return logger


def publish_analysis(loggers: list, summary, run) -> None:
    """Put a finished analysis into the loggers' run summaries (W&B: headline numbers)."""
    headline = {f"analysis/{k}": v for k, v in summary.headline().items() if isinstance(v, (int, float))}
    for logger in loggers:
        if isinstance(logger, WandbLogger) and headline:
            logger.experiment.summary.update(headline)
