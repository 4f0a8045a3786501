"""A sweep-level W&B run of a comparison (job_type "compare"): the report's tables and figures.

`publish_compare` opens one W&B run next to the report (``<out>/wandb/``) — online with an API key,
offline otherwise (`wandb_credentials`, as the training loggers; upload later with `wandb sync <out>/wandb/offline-run-*`)
— and logs the seed-group table (``groups``: group, metric, n, mean, ci_low, ci_high, note) and the
claims table as ``wandb.Table``s, every other compare table, the headline and group figures as
images, and the verdict counts in the run summary. Its group is the sweep's experiment name, so it
sits beside the sweep's training runs. `python -m backbone_lab.compare --no-wandb` skips it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from backbone_lab.compare.runs import Run

FIGURES = {"headline.png": "headline", "groups.png": "groups_figure", "overlay.png": "overlay"}


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, (int, float, str, bool)) else str(v)


def _table(rows: list[dict], columns: list[str] | tuple[str, ...] | None = None):
    import wandb

    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    return wandb.Table(columns=cols, data=[[_cell(r.get(c)) for c in cols] for r in rows])


def publish_compare(out_dir: Path, runs: list[Run], tables: dict[str, list[dict]], claims: list[dict],
                    figures: list[str], inputs: list[str], mode: str = "auto", project: str = "backbone_lab") -> Path | None:
    """Log the comparison as one W&B run (job_type "compare"); returns its local run folder, or None
    when wandb is not installed or `mode` is "disabled"."""
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        return None
    from backbone_lab.wandb_credentials import wandb_has_credentials

    offline = mode == "offline" or (mode == "auto" and not wandb_has_credentials())
    names = sorted({str(r.cfg("experiment_name")) for r in runs if r.cfg("experiment_name")})
    out_dir = Path(out_dir)
    run = wandb.init(project=project, job_type="compare", dir=str(out_dir), mode="offline" if offline else "online",
                     name=f"compare/{'+'.join(names) or out_dir.parent.name}", group=names[0] if len(names) == 1 else None,
                     config={"inputs": inputs, "n_runs": len(runs), "experiments": names}, reinit="finish_previous")
    try:
        from backbone_lab.compare.report import GROUPS_CSV_COLUMNS

        payload: dict[str, Any] = {}
        for name, rows in tables.items():
            payload[name] = _table(rows, GROUPS_CSV_COLUMNS if name == "groups" else None)
        if claims:
            payload["claims"] = _table([{k: v for k, v in r.items() if k not in ("runs", "statement")} for r in claims])
        for fig, key in FIGURES.items():
            if fig in figures and (out_dir / fig).exists():
                payload[key] = wandb.Image(str(out_dir / fig))
        run.log(payload)
        for verdict in ("holds", "fragile", "does not hold", "not testable here"):
            run.summary[f"claims/{verdict}"] = sum(1 for c in claims if c.get("verdict") == verdict)
        local = Path(run.dir).parent
    finally:
        run.finish()
    return local
