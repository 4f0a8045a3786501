"""Which config keys distinguish the runs, and a short label for each run.

The swept keys are read from each run's saved, resolved `config.yaml` (not from Hydra's
override strings), so ad-hoc grids, experiment grids and hand-picked run folders are treated
alike: a key is "swept" when its value differs between the runs being compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backbone_lab.compare.runs import Run

# Keys that name places, presentation or bookkeeping: never "swept". Callback nodes are left out
# too: their values are fixed by the experiment or derived (e.g. `optimizer: ${optimizer._target_}`).
IGNORED_PREFIXES = ("run_dir", "run_name", "paths.", "logger.", "callbacks.", "tags", "resume",
                    "data.cache_dir", "data.num_workers", "analysis.source_run", "analysis.out_dir",
                    "analysis.progress", "experiment_name", "hydra.")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted.key: leaf}; lists are kept as JSON strings (hashable, printable)."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        key = prefix[:-1]
        out[key] = json.dumps(node) if isinstance(node, (list, tuple)) else node
    return out


def _ignored(key: str) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in IGNORED_PREFIXES)


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between the runs (sorted, ignoring bookkeeping keys). A run
    without a saved config (a job that failed before writing one) says nothing about them: with it,
    every key would "differ" and every label would spell the whole config."""
    flat = [flatten(r.config) for r in runs if r.config]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for k in keys:
        if _ignored(k):
            continue
        values = {json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}
        if len(values) > 1:
            out.append(k)
    return out


# Analysis settings that change no number (presentation, resources, where files go).
ANALYSIS_PRESENTATION = frozenset({"figures", "progress", "chunk_mb", "device", "verify_crc", "out_dir", "source_run"})
ANALYSIS_PREFIX = "analysis_used."


def analysis_settings(run: Run) -> dict[str, Any]:
    """The settings the run's analysis actually used (summary.json `config`), as
    {"analysis_used.<key>": value}, presentation keys left out ({} for runs without an analysis)."""
    return {f"{ANALYSIS_PREFIX}{k}": json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else v
            for k, v in run.summary.config.items() if k not in ANALYSIS_PRESENTATION}


def identity(run: Run, with_seed: bool = False) -> dict[str, Any]:
    """What makes a run's numbers what they are: every non-bookkeeping config value (the schedule,
    λ schedule, anchor, ... included) plus the analysis settings used; the seed only when asked."""
    out = {k: v for k, v in flatten(run.config).items() if not _ignored(k) and (with_seed or k != "seed")}
    out.update(analysis_settings(run))
    return out


def seed_group_key(run: Run) -> str:
    """Runs with the same key differ only in their seed (same protocol and analysis settings)."""
    return json.dumps(sorted(identity(run).items()), sort_keys=True, default=str)


def swept_analysis_keys(runs: list[Run]) -> list[str]:
    """Analysis settings (summary.json `config`) that differ between runs whose config does not
    already say so: a trajectory analysed twice with different settings is two groups. Unfinished and
    failed runs are left out: their missing settings are not a difference."""
    flat = [analysis_settings(r) for r in runs if r.ok]  # a run not analysed yet (unfinished, failed) says nothing
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]


def optimizer_name(cfg: dict) -> str:
    """Short optimizer label: AdamW, SGD, SGD+momentum, SGDW-Nesterov, RMSprop, ..."""
    opt = cfg.get("optimizer") or {}
    cls = str(opt.get("_target_", "?")).rsplit(".", 1)[-1]
    momentum = float(opt.get("momentum", 0) or 0)
    if cls == "SGD":
        if opt.get("nesterov"):
            return "SGD+Nesterov"
        return "SGD+momentum" if momentum > 0 else "SGD"
    if cls == "SGDW":
        return "SGDW-Nesterov" if opt.get("nesterov") else ("SGDW+momentum" if momentum > 0 else "SGDW")
    return cls


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def label_runs(runs: list[Run]) -> list[str]:
    """Set `run.label` (all swept values) and `run.group` (swept values except the seed).

    When the optimizer class differs between runs, its short name stands for the whole
    `optimizer.*` node (plus `lr` when the lr differs too); otherwise the differing
    `optimizer.*` keys are shown individually (e.g. `betas=[0.9, 0.8]`).
    """
    keys = swept_keys(runs)
    analysis_keys = [k for k in swept_analysis_keys(runs) if f"analysis.{k[len(ANALYSIS_PREFIX):]}" not in keys]
    target_differs = "optimizer._target_" in keys or any(k in keys for k in ("optimizer.momentum", "optimizer.nesterov"))
    for run in runs:
        if not run.config:  # failed before saving its config: its folder name is all there is
            run.label = run.group = run.name
            continue
        flat = flatten(run.config)
        parts, group_parts = [], []
        if target_differs:
            name = optimizer_name(run.config)
            if "optimizer.lr" in keys:
                name += f"(lr={_fmt(flat.get('optimizer.lr'))})"
            parts.append(name)
            group_parts.append(name)
        for k in keys:
            if target_differs and k.startswith("optimizer."):
                continue
            short = k.split(".", 1)[1] if k.startswith(("optimizer.", "data.", "train.", "model.", "objective.")) else k
            value = flat.get(k)
            if k == "init_from" and value:  # a source run folder: its name is enough to tell runs apart
                value = Path(str(value)).name
            item = f"{short}={_fmt(value)}"
            parts.append(item)
            if k != "seed":
                group_parts.append(item)
        settings = analysis_settings(run)
        for k in analysis_keys:
            item = f"analysis {k[len(ANALYSIS_PREFIX):]}={_fmt(settings.get(k))}"
            parts.append(item)
            group_parts.append(item)
        run.label = ", ".join(parts) or run.name
        run.group = ", ".join(group_parts) or "all"
    # a group label names one seed group: distinct protocols that print alike get a number
    keys_of: dict[str, list[str]] = {}
    for run in runs:
        seen = keys_of.setdefault(run.group, [])
        if seed_group_key(run) not in seen:
            seen.append(seed_group_key(run))
    for run in runs:
        seen = keys_of[run.group]
        if len(seen) > 1:
            run.group = f"{run.group} #{seen.index(seed_group_key(run)) + 1}"
    return keys
