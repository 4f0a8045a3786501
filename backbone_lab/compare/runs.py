"""Find runs and load what each one wrote (config, eval metrics, analysis summary, time series).

Inputs accepted by `discover_runs`: a run folder (holds `config.yaml`), a sweep folder
(`multirun_outputs/<experiment>/<time>/`, whose job folders may hold `REDIRECT.json` pointing at
the folder where a skipped/resumed job's results live), or an experiment folder holding several
sweeps. A run reached twice (e.g. a skipped job and its original) is loaded once. Every path
inside a run folder comes from `RunDir`; job states from `run_markers`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from backbone_lab.analysis.stages.decomposition import TIMESERIES_CSV
from backbone_lab.analysis.stages.rolling import ROLLING_CSV
from backbone_lab.analysis.stages.update_alignment import UA_CSV
from backbone_lab.analysis.summary import Summary
from backbone_lab.compare.malformed import UnreadableRun, check_summary, reason_of
from backbone_lab.metrics_csv import read_columns
from backbone_lab.run_dir import RunDir
from backbone_lab.run_markers import MARKERS, read_marker
from backbone_lab.saved_config import upgrade


@dataclass
class Run:
    """Everything the comparison needs from one run folder (missing parts are empty)."""

    run_dir: Path
    job_dir: Path
    config: dict[str, Any]
    state: str  # done | diverged | failed | unfinished | unreadable (`compare.malformed`; the reason in marker["error"])
    marker: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, list[float]] = field(default_factory=dict)  # column -> values (sorted by step)
    summary: Summary = field(default_factory=Summary)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    rolling: dict[str, list[float]] = field(default_factory=dict)
    update_alignment: dict[str, list[float]] = field(default_factory=dict)  # step, abs_cos (trunk, fixed lag)
    execution: dict[str, Any] = field(default_factory=dict)  # execution.json: threads, torch_version, device, ...
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
        """A value of analysis/summary.json by dotted path (prefer the `Summary` accessors)."""
        return self.summary.get_path(dotted, default)

    @property
    def ok(self) -> bool:
        return self.state in ("done", "diverged")

    def mark_unreadable(self, reason: str) -> None:
        """Keep this run in the report as a row `unreadable: <reason>` and forget what it wrote."""
        self.state, self.marker = "unreadable", {"error": reason}
        self.eval, self.summary, self.timeseries, self.rolling, self.update_alignment = {}, Summary(), {}, {}, {}


def _columns(path: Path, key: str | None = "step") -> dict[str, list[float]]:
    """A numeric CSV as column -> list (empty when absent): eval metrics de-duplicated on step."""
    cols = read_columns(path, key=key)
    return {k: v.tolist() for k, v in cols.items()} if cols else {}


def _trunk_update_alignment(path: Path) -> dict[str, list[float]]:
    """step -> |cos(u, v_b)| of the analysis' trunk updates (fixed lag, else consecutive), {} when absent."""
    import csv

    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("subset") == "trunk"]
    variant = "fixed_lag" if any(r.get("variant") == "fixed_lag" for r in rows) else "consecutive"
    pts = sorted((float(r["step"]), float(r["abs_cos"])) for r in rows if r.get("variant") == variant and r.get("abs_cos"))
    return {"step": [p[0] for p in pts], "abs_cos": [p[1] for p in pts]} if pts else {}


def _execution(run_dir: Path) -> dict[str, Any]:
    """The run's execution record (`execution.json`: threads, torch version, device, precision, ...),
    {} when absent or unreadable (runs from before the record existed)."""
    rd = RunDir(run_dir)
    path = getattr(rd, "execution", rd.root / "execution.json")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def redirect_target(job_dir: Path) -> tuple[Path, str | None]:
    """(folder holding a sweep job's results, the REDIRECT reason or None)."""
    path = RunDir(job_dir).redirect
    if path.exists():
        try:
            info = json.loads(path.read_text())
            return Path(info["run_dir"]), info.get("reason")
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return Path(job_dir), None


_JOB_FILES = (RunDir(".").config.name, RunDir(".").redirect.name, *MARKERS)


def job_folders(root: Path) -> list[Path]:
    """The outermost folders under `root` holding a run's config, a job marker or a REDIRECT
    (Hydra's `.hydra` and analysis outputs are not jobs)."""
    root = Path(root)
    skip = {".hydra", RunDir(".").analysis.name}
    found = set()
    for name in (*_JOB_FILES, ".hydra"):
        for p in root.rglob(name):
            d = p.parent
            rel = d.relative_to(root).parts
            if d == root or skip & set(rel):
                continue
            found.add(d)
    dirs = sorted(found, key=natural_key)  # job 2 before job 10: the sweep's own order
    return [d for d in dirs if not any(o != d and o in d.parents for o in dirs)]


def natural_key(path: Path) -> tuple:
    """Sort key reading the digit runs of each path part as numbers (`2_x` < `10_x`)."""
    import re

    return tuple(tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", part) if t)
                 for part in path.parts)


def _read(path: Path, reader):
    """`reader(path)`, any failure as `UnreadableRun` naming the file (one line)."""
    try:
        return reader(path)
    except UnreadableRun:
        raise
    except Exception as err:  # noqa: BLE001 - csv.Error (a 20 MB field), bad UTF-8, YAML, wrong shapes, ...
        raise UnreadableRun(reason_of(err, path.name)) from None


def _summary(path: Path) -> Summary:
    """summary.json as the analysis wrote it (`malformed.check_summary`); empty when absent."""
    if not path.exists():
        return Summary()
    data = json.loads(path.read_text(encoding="utf-8"))
    check_summary(data)
    return Summary(data)


def _config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    config = upgrade(OmegaConf.to_container(OmegaConf.load(path), resolve=False))  # saved resolved; today's layout
    if not isinstance(config, dict):
        raise UnreadableRun(f"{path.name} holds a {type(config).__name__}, not a config mapping")
    return config


def load_run(run_dir: Path, job_dir: Path | None = None) -> Run:
    """The run in `run_dir`; a malformed one comes back with state `unreadable` and the reason
    (`compare.malformed`) instead of raising."""
    run_dir = Path(run_dir)
    try:
        config = _read(RunDir(run_dir).config, _config)
    except UnreadableRun as err:
        run = Run(run_dir=run_dir, job_dir=Path(job_dir or run_dir), config={}, state="unreadable")
        run.mark_unreadable(str(err))
        return run
    try:
        return _load_run(run_dir, job_dir, config)
    except UnreadableRun as err:
        run = Run(run_dir=run_dir, job_dir=Path(job_dir or run_dir), config=config, state="unreadable")
        run.mark_unreadable(str(err))
        return run


def _load_run(run_dir: Path, job_dir: Path | None, config: dict[str, Any]) -> Run:
    rd = RunDir(run_dir)
    marker = read_marker(run_dir)
    if marker is None:
        state, payload = "unfinished", {}
    elif marker[0] == "FAILED":
        state, payload = "failed", marker[1]
    else:
        payload = marker[1]
        state = "diverged" if payload.get("status") == "diverged" else "done"
    return Run(
        run_dir=run_dir,
        job_dir=Path(job_dir or run_dir),
        config=config,
        state=state,
        marker=payload,
        eval=_read(rd.eval_metrics, _columns),
        summary=_read(rd.summary, _summary),
        timeseries=_read(rd.analysis / TIMESERIES_CSV, _columns),
        rolling=_read(rd.analysis / ROLLING_CSV, lambda p: _columns(p, key=None)),
        update_alignment=_read(rd.analysis / UA_CSV, _trunk_update_alignment),
        execution=_execution(run_dir),
    )


def discover_runs(paths: list[str | Path]) -> list[Run]:
    """Runs under the given paths (run dirs, sweep dirs, experiment dirs), each loaded once."""
    seen: set[Path] = set()
    runs: list[Run] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep folder")
        if RunDir(p).config.exists() or RunDir(p).redirect.exists() or RunDir(p).summary.exists():
            candidates = [p]  # a run, or an analysed checkpoint series (analysis/summary.json only)
        else:
            candidates = job_folders(p)
        for job in candidates:
            target, _ = redirect_target(job)
            key = target.resolve()
            if key in seen or not (RunDir(target).config.exists() or RunDir(target).summary.exists()) and read_marker(target) is None:
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


def val_loss_drop(run: Run) -> float:
    """First minus last validation loss (nats/token): summary.json `learning.drop` when the analysis
    recorded it, else from eval_metrics.csv's finite val_loss values (NaN with fewer than two)."""
    learning = run.get("learning")
    if isinstance(learning, dict) and isinstance(learning.get("drop"), (int, float)):
        return float(learning["drop"])
    vals = [v for v in run.eval.get("val_loss") or [] if math.isfinite(v)]
    return vals[0] - vals[-1] if len(vals) >= 2 else math.nan


def val_loss_ends(run: Run) -> tuple[float, float]:
    """(first, last) validation loss, from summary `learning` when present, else eval_metrics.csv."""
    learning = run.get("learning")
    if isinstance(learning, dict) and isinstance(learning.get("val_loss_first"), (int, float)) \
            and isinstance(learning.get("val_loss_last"), (int, float)):
        return float(learning["val_loss_first"]), float(learning["val_loss_last"])
    vals = [v for v in run.eval.get("val_loss") or [] if math.isfinite(v)]
    return (vals[0], vals[-1]) if vals else (math.nan, math.nan)
