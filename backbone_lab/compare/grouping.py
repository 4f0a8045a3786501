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
    """Config keys whose values differ between the runs (sorted, ignoring bookkeeping keys)."""
    flat = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for k in keys:
        if _ignored(k):
            continue
        values = {json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}
        if len(values) > 1:
            out.append(k)
    return out


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
    target_differs = "optimizer._target_" in keys or any(k in keys for k in ("optimizer.momentum", "optimizer.nesterov"))
    for run in runs:
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
        run.label = ", ".join(parts) or run.name
        run.group = ", ".join(group_parts) or "all"
    return keys
