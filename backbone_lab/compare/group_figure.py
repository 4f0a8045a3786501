"""The seed-group figure of a comparison (`groups.png`): each group's mean with its 95 % t band.

One panel per headline metric (PC1 row-normalised, k95, drift, ρ mean, early update |cos|, best
p_ood); per seed group (runs that differ only in their seed, `seed_groups`) the seeds as dots, the
mean as a bar and the 95 % t interval over the seeds as a shaded band (`seed_stats`; a group of one
seed has no band and says "one seed"); where the analysis computed a null baseline, the null's mean
as a grey cross. Colours are the overlays' (one per seed group).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.compare.claim_metrics import ClaimContext, null_entry
from backbone_lab.compare.plots import group_colors
from backbone_lab.compare.runs import Run
from backbone_lab.compare.seed_groups import measured_values, seed_groups
from backbone_lab.compare.seed_stats import seed_interval

PANELS = (("pc1_rownorm_pct", "PC1 of the row-normalised drift", "PC1 explained (% of drift energy)"),
          ("k95_rownorm", "k95 (row-normalised)", "k95 (components)"),
          ("drift", "drift from the anchor (trunk)", "‖θ(final) − θ(anchor)‖ (parameter units)"),
          ("rho_mean", "rolling-window stability", "mean ρ = |cos(v_w, v_w+1)| (0-1)"),
          ("update_abs_cos_early", "early update alignment", "mean |cos(u, v_b)| (early updates)"),
          ("best_p_ood", "best OOD probe accuracy", "best p_ood (fraction of probes)"))
# Where each panel's quantity can lie: a t band is drawn only inside it (the interval itself,
# in groups.csv, is not clipped; a band past 100 % or below 0 would draw impossible values)
PANEL_RANGE = {"pc1_rownorm_pct": (0.0, 100.0), "k95_rownorm": (1.0, np.inf), "drift": (0.0, np.inf),
               "rho_mean": (0.0, 1.0), "update_abs_cos_early": (0.0, 1.0), "best_p_ood": (0.0, 1.0)}


def _null_mean(run: Run, name: str) -> float:
    entry = null_entry(run, name)
    return float(entry["mean"]) if entry and isinstance(entry.get("mean"), (int, float)) else np.nan


def group_figure(runs: list[Run], out_dir: Path) -> str | None:
    """Write `groups.png`; returns its name (None without a finished run)."""
    groups = seed_groups(runs)
    if not groups:
        return None
    ctx = ClaimContext(runs)
    plt = P.pyplot()
    colors = group_colors([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(2, 3, figsize=(15.5, 8.4))
    labels = [textwrap.fill(g.label, 28, break_long_words=False) for g in groups]
    legend: dict = {}  # one legend for all panels (per-panel legends cover the data)
    for ax, (name, title, ylabel) in zip(axes.flat, PANELS):
        drawn, null_drawn = False, False
        values_all = []
        for i, g in enumerate(groups):
            vals = measured_values(name, g.runs, ctx)
            if not vals:
                continue
            drawn = True
            values_all += vals
            color = colors[id(g.runs[0])]
            ci = seed_interval(vals)
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.plot(i + jitter, vals, "o", color=color, ms=4, alpha=0.8, label="seeds" if i == 0 else None)
            ax.hlines(ci.mean, i - 0.3, i + 0.3, color=color, lw=2.2, label="group mean" if i == 0 else None)
            if ci.has_interval:
                low, high = PANEL_RANGE.get(name, (-np.inf, np.inf))
                ax.fill_between([i - 0.3, i + 0.3], max(ci.lo, low), min(ci.hi, high), color=color, alpha=0.22, lw=0,
                                label="95 % t interval over seeds (within the possible range)" if i == 0 else None)
            else:
                ax.annotate("one seed", (i, ci.mean), textcoords="offset points", xytext=(0, 7), ha="center",
                            fontsize=7, color="0.3")
            nulls = [x for x in (_null_mean(r, name) for r in g.runs) if np.isfinite(x)]
            if nulls:
                ax.plot([i], [np.mean(nulls)], "x", color="0.35", ms=8, mew=2,
                        label="null mean (random walk)" if not null_drawn else None)
                null_drawn = True
        ax.set_title(title, fontsize=9)
        if not drawn:
            P.not_enough(ax, f"no run has {name}")
            continue
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        logy = name == "drift" and P.log_if_wide(ax, values_all)
        ax.set_ylabel(ylabel + (" (log)" if logy else ""))
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.suptitle("Seed groups: each group's seeds (dots), mean (bar) and 95 % t interval over the seeds (band)",
                 fontsize=10)
    fig.legend(list(legend.values()), list(legend.keys()), loc="upper center", ncol=len(legend), fontsize=8,
               bbox_to_anchor=(0.5, 0.955), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return P.save(plt, fig, Path(out_dir) / "groups.png").name
