"""Find runs and load what each one wrote (config, eval metrics, analysis summary, time series).

Inputs accepted by `discover_runs`: a run folder (holds `config.yaml`), a sweep folder
(`multirun_outputs/<experiment>/<time>/`, whose job folders may hold `REDIRECT.json` pointing at
the folder where a skipped/resumed job's results live), or an experiment folder holding several
sweeps. A run reached twice (e.g. a skipped job and its original) is loaded once.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from backbone_lab.run_markers import read_marker
from backbone_lab.sweep import job_dirs, resolve_redirect


@dataclass
class Run:
    """Everything the comparison needs from one run folder (missing parts are empty)."""

    run_dir: Path
    job_dir: Path
    config: dict[str, Any]
    state: str  # done | diverged | failed | unfinished
    marker: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, list[float]] = field(default_factory=dict)  # column -> values (sorted by step)
    summary: dict[str, Any] = field(default_factory=dict)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    rolling: dict[str, list[float]] = field(default_factory=dict)
    label: str = ""
    group: str = ""

    @property
    def name(self) -> str:
        return self.job_dir.name

    def cfg(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def get(self, dotted: str, default: Any = None) -> Any:
        """A value of analysis/summary.json by dotted path (None-safe)."""
        node: Any = self.summary
        for part in dotted.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        return node

    @property
    def ok(self) -> bool:
        return self.state in ("done", "diverged")


def _read_csv_columns(path: Path, dedupe_on: str | None = "step") -> dict[str, list[float]]:
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if dedupe_on and rows and dedupe_on in rows[0]:
        by: dict[float, dict] = {}
        for r in rows:
            try:
                by[float(r[dedupe_on])] = r
            except (TypeError, ValueError):
                continue
        rows = [by[k] for k in sorted(by)]
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            try:
                x = float(v) if v not in ("", None) else math.nan
            except ValueError:
                x = math.nan
            cols.setdefault(k, []).append(x)
    return cols


def load_run(run_dir: Path, job_dir: Path | None = None) -> Run:
    run_dir = Path(run_dir)
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)  # saved resolved
    marker = read_marker(run_dir)
    if marker is None:
        state, payload = "unfinished", {}
    elif marker[0] == "FAILED":
        state, payload = "failed", marker[1]
    else:
        payload = marker[1]
        state = "diverged" if payload.get("status") == "diverged" else "done"
    summary: dict[str, Any] = {}
    sp = run_dir / "analysis" / "summary.json"
    if sp.exists():
        try:
            summary = json.loads(sp.read_text())
        except json.JSONDecodeError:
            summary = {}
    return Run(
        run_dir=run_dir,
        job_dir=Path(job_dir or run_dir),
        config=config,
        state=state,
        marker=payload,
        eval=_read_csv_columns(run_dir / "eval_metrics.csv"),
        summary=summary,
        timeseries=_read_csv_columns(run_dir / "analysis" / "timeseries.csv"),
        rolling=_read_csv_columns(run_dir / "analysis" / "rolling.csv", dedupe_on=None),
    )


def discover_runs(paths: list[str | Path]) -> list[Run]:
    """Runs under the given paths (run dirs, sweep dirs, experiment dirs), each loaded once."""
    seen: set[Path] = set()
    runs: list[Run] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep folder")
        if (p / "config.yaml").exists() or (p / "REDIRECT.json").exists():
            candidates = [p]
        else:
            candidates = job_dirs(p)
        for job in candidates:
            target, _ = resolve_redirect(job)
            key = target.resolve()
            if key in seen or not (target / "config.yaml").exists() and read_marker(target) is None:
                continue
            seen.add(key)
            runs.append(load_run(target, job))
    return runs


def eval_last(run: Run, column: str) -> float:
    vals = run.eval.get(column) or []
    return vals[-1] if vals else math.nan


def eval_best(run: Run, column: str = "p_ood") -> tuple[float, float]:
    """(best value, step) of an eval column (max over finite values)."""
    vals = run.eval.get(column) or []
    steps = run.eval.get("step") or []
    best, at = math.nan, math.nan
    for s, v in zip(steps, vals):
        if math.isfinite(v) and (not math.isfinite(best) or v > best):
            best, at = v, s
    return best, at
