"""Seeds as an axis: runs that differ only in their seed form a group; each group's numbers are a
mean with a 95 % t interval over its seeds (`seed_stats`), "one seed" when it has one.

`groups_table(runs)` is the long table behind ``compare/groups.csv`` (columns ``group, metric, n,
mean, ci_low, ci_high`` and a ``note``): one row per (group, metric) for the headline metrics of
`claim_metrics` (names as in the claims file), plus the null baseline's mean of each metric the
analysis gives one for (``null:<metric>``). The note says "one seed" or which execution details
(`execution.json`: threads, torch version, device, precision, determinism, ...) differ between the
group's runs — numbers that may not be comparable, shown rather than hidden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from backbone_lab.compare.claim_metrics import METRICS, ClaimContext, NotMeasured
from backbone_lab.compare.grouping import seed_group_key
from backbone_lab.compare.runs import Run
from backbone_lab.compare.seed_stats import ONE_SEED, seed_interval

GROUPS_CSV_COLUMNS = ("group", "metric", "n", "mean", "ci_low", "ci_high", "note")  # groups.csv

GROUP_COLUMNS = ("group", "metric", "n", "mean", "ci_low", "ci_high", "note")
# the headline numbers per group (claim metric names; absent ones are skipped)
GROUP_METRICS = ("final_val_loss", "val_loss_drop", "best_p_ood", "pc1_rownorm_pct", "pc1_raw_pct", "k95_rownorm",
                 "k95_raw", "drift", "backbone_frac_mean_pct", "rho_mean", "rho_min", "gamma_a_first", "phase_overlap",
                 "phase_pc1_gain", "update_abs_cos_early", "update_abs_cos", "grad_abs_cos", "update_over_grad")
# execution details that change numbers (execution.json); a difference inside a group is flagged
EXECUTION_KEYS = ("threads", "torch_version", "device", "precision", "deterministic", "world_size", "python")
# bookkeeping in execution.json that never changes a number (when the record was written)
EXECUTION_BOOKKEEPING = ("written_at",)


@dataclass
class SeedGroup:
    label: str
    runs: list[Run]

    @property
    def seeds(self) -> list:
        return [r.cfg("seed") for r in self.runs]


def seed_groups(runs: list[Run]) -> list[SeedGroup]:
    """Finished (or diverged) runs grouped by everything but the seed, in first-seen order."""
    groups: dict[str, SeedGroup] = {}
    for r in runs:
        if r.ok:
            groups.setdefault(seed_group_key(r), SeedGroup(r.group or r.label or r.name, [])).runs.append(r)
    return list(groups.values())


def execution_differences(runs: list[Run]) -> str:
    """'threads 1 / 2; torch_version 2.3 / 2.4' for the execution details that differ between runs
    that recorded them ('' when they agree or none recorded any)."""
    recorded = [r.execution for r in runs if r.execution]
    if len(recorded) < 2:
        return ""
    parts = []
    keys = set().union(*recorded) - set(EXECUTION_BOOKKEEPING)
    for key in sorted(keys, key=lambda k: (k not in EXECUTION_KEYS, k)):
        values = []
        for e in recorded:
            v = json.dumps(e.get(key), sort_keys=True, default=str)
            if v not in values:
                values.append(v)
        if len(values) > 1:
            parts.append(f"{key} {' / '.join(v.strip(chr(34)) for v in values)}")
    return "; ".join(parts)


def _null_means(run: Run) -> dict[str, float]:
    block = run.get("null_baseline.metrics") or {}
    out = {}
    if isinstance(block, dict):
        for name, entry in block.items():
            if isinstance(entry, dict) and isinstance(entry.get("mean"), (int, float)):
                out[str(name)] = float(entry["mean"])
    return out


def measured_values(name: str, runs: list[Run], ctx: ClaimContext) -> list:
    """The scalar values of claim metric `name` over `runs` (runs that do not measure it are left out)."""
    vals = []
    for r in runs:
        try:
            v = METRICS[name].value(r, ctx)
        except NotMeasured:
            continue
        if not isinstance(v, list):
            vals.append(v)
    return vals


def groups_table(runs: list[Run], ctx: ClaimContext | None = None) -> list[dict]:
    """Rows (group, metric, n, mean, ci_low, ci_high, note): every seed group x headline metric."""
    ctx = ctx or ClaimContext(runs)
    rows = []
    for g in seed_groups(runs):
        exec_note = execution_differences(g.runs)
        per_metric: dict[str, list[float]] = {}
        for name in GROUP_METRICS:
            vals = measured_values(name, g.runs, ctx)
            if vals:
                per_metric[name] = vals
        for r in g.runs:
            for name, v in _null_means(r).items():
                per_metric.setdefault(f"null:{name}", []).append(v)
        for name, vals in per_metric.items():
            ci = seed_interval(vals)
            notes = [ONE_SEED] if ci.n == 1 else []
            if exec_note:
                notes.append(f"execution differs: {exec_note}")
            rows.append({"group": g.label, "metric": name, "n": ci.n, "mean": ci.mean, "ci_low": ci.lo,
                         "ci_high": ci.hi, "note": "; ".join(notes)})
    return rows


# columns of the per-run tables that name or describe a row rather than measure it
_ROW_KEYS = ("arm", "window", "beta2", "lr")
_NOT_MEASURED = ("run", "state", "steps", "error", "run_dir", "source", "paper_note", "analysis_flags", "matched_step",
                 "best_p_ood_step", "final_step", "anchor_step", "snapshots_used", "train_seconds", "update_lag")


def with_seed_means(rows: list[dict], runs: list[Run]) -> list[dict]:
    """A per-run table with, after the rows of each seed group of ≥ 2 seeds, one row
    "<group>: mean of n seeds [95 % t]" whose numeric cells read "mean [lo, hi]" (markdown only:
    the CSVs keep one number per cell). Rows are matched to runs by their `run` label."""
    by_label = {(r.label or r.name): r for r in runs}
    keyed: dict[tuple, list[dict]] = {}
    order: list[tuple] = []
    for row in rows:
        run = by_label.get(row.get("run"))
        key = (seed_group_key(run) if run else id(row), *(str(row.get(k)) for k in _ROW_KEYS if k in row))
        if key not in keyed:
            keyed[key] = []
            order.append(key)
        keyed[key].append(row)
    out: list[dict] = []
    for key in order:
        members = keyed[key]
        out += members
        run = by_label.get(members[0].get("run"))
        if len(members) < 2 or run is None:
            continue
        summary: dict = {k: members[0][k] for k in _ROW_KEYS if k in members[0]}
        summary["run"] = f"{run.group or 'all'}: mean of {len(members)} seeds [95 % t]"
        for col in members[0]:
            if col in _NOT_MEASURED or col in summary or col.startswith("paper_"):
                continue
            vals = [m.get(col) for m in members]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                ci = seed_interval(vals)
                if ci.n:
                    summary[col] = ci.text(lambda v: f"{v:.4g}").replace(f" (n={ci.n})", "")
        out.append(summary)
    return out
