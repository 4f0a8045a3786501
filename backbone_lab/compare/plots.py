"""Overlay plots across runs: a(t), ‖r(t)‖, ρ, update alignment, p_ood, val loss (+ reheating a(t)).

Conventions of the per-run figures (`analysis.plotting`): every panel has a y label with its
unit; a quantity whose runs differ by orders of magnitude (β2 = 0's drift) goes on a log axis;
log axes of cosines carry the noise floor √(2/(πD)); p_ood panels carry the chance level; a
panel no run can fill says why ("not enough snapshots ...") instead of staying empty. a(t) and
‖r(t)‖ are each measured along the run's *own* backbone (different directions per run), which the
panel title says; reheating a(t) is projected on the source run's backbone (common to all
reheating runs of that source).

Seeds: runs that differ only in their seed (a seed group, `grouping.seed_group_key`) are drawn as
their mean with a shaded 95 % t band over the seeds at each shared x (`seed_stats`), labelled
"mean of n seeds ± 95 % t band"; the seeds themselves are thin lines in the group's colour. A
group of one seed is drawn as its run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.compare.claim_selection import chance_threshold
from backbone_lab.compare.grouping import seed_group_key
from backbone_lab.compare.runs import Run
from backbone_lab.compare.seed_stats import seed_interval


@dataclass(frozen=True)
class Panel:
    stem: str          # overlay_<stem>.png
    title: str
    ylabel: str
    source: str        # Run attribute holding the columns (timeseries, rolling, eval, update_alignment, reheat)
    x: str
    y: str
    log: str = "auto"  # auto (when runs span > 100x) | always | never
    missing: str = "not enough snapshots"


PANELS = (
    Panel("a_t", "a(t): drift along the backbone\n(each run's own backbone v_b)", "a(t) (parameter units)",
          "timeseries", "step", "a_t", missing="no a(t): no analysis / not enough snapshots"),
    Panel("norm_r", "‖r(t)‖: transverse residual\n(each run's own backbone v_b)", "‖r(t)‖ (parameter units)",
          "timeseries", "step", "norm_r_t", missing="no ‖r(t)‖: no analysis / not enough snapshots"),
    Panel("rho", "ρ: adjacent rolling-window backbones", "ρ = |cos(v_w, v_w+1)| (0-1)", "rolling", "centre",
          "rho_next", log="never", missing="not enough snapshots for two rolling windows"),
    Panel("update_alignment", "updates vs the backbone\n(each run's own global v_b)", "|cos(u, v_b)| (log)",
          "update_alignment", "step", "abs_cos", log="always", missing="not enough snapshots for update alignment"),
    Panel("p_ood", "OOD probe accuracy", "p_ood (fraction of probes)", "eval", "step", "p_ood", log="never",
          missing="no p_ood evaluations"),
    Panel("val_loss", "validation loss (L_LM)", "val L_LM (nats/token)", "eval", "step", "val_loss",
          missing="no validation loss"),
)
REHEAT_PANEL = Panel("reheat_a", "reheating: a(t) on the source run's backbone\n(common v_b per source run)",
                     "a(t) (parameter units)", "reheat", "steps", "a", log="never")


def _series(run: Run, panel: Panel) -> tuple[np.ndarray, np.ndarray]:
    if panel.source == "reheat":
        xs, ys = run.summary.reheat_steps, run.summary.reheat_a
    else:
        data = getattr(run, panel.source)
        xs, ys = data.get(panel.x) or [], data.get(panel.y) or []
    pts = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)


def run_colors(runs: list[Run]) -> dict[int, str]:
    """One colour per run, the same in every figure of the comparison."""
    cycle = [f"C{i}" for i in range(10)]
    return {id(r): cycle[i % len(cycle)] for i, r in enumerate(runs)}


def group_colors(runs: list[Run]) -> dict[int, str]:
    """One colour per seed group (the seeds of a group share it), the same in every figure."""
    cycle = [f"C{i}" for i in range(10)]
    keys: list[str] = []
    out = {}
    for r in runs:
        k = seed_group_key(r)
        if k not in keys:
            keys.append(k)
        out[id(r)] = cycle[keys.index(k) % len(cycle)]
    return out


def group_band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, lo, hi) over the x values every seed's series has (95 % t band over the seeds)."""
    common = sorted(set.intersection(*[set(x.tolist()) for x, _ in series]))
    lookup = [dict(zip(x.tolist(), y.tolist())) for x, y in series]
    cis = [seed_interval([d[c] for d in lookup]) for c in common]
    return (np.array(common, dtype=float), np.array([c.mean for c in cis]), np.array([c.lo for c in cis]),
            np.array([c.hi for c in cis]))


def _reference_line(ax, y: float, text: str) -> None:
    """A dashed horizontal reference (noise floor, chance level), labelled on the plot itself."""
    ax.axhline(y, color="0.4", ls="--", lw=0.9, label=text)
    ax.text(0.01, y, " " + text, transform=ax.get_yaxis_transform(), fontsize=6.5, color="0.3", va="bottom")


def draw_panel(ax, runs: list[Run], panel: Panel, colors: dict[int, str]) -> bool:
    """Draw one overlay panel; False (and a "not enough ..." message) when no run has data."""
    series = [(r, *_series(r, panel)) for r in runs]
    series = [(r, x, y) for r, x, y in series if len(x) >= (1 if panel.source in ("eval", "reheat") else 2)]
    ax.set_title(panel.title, fontsize=9)
    if not series:
        P.not_enough(ax, panel.missing)
        return False
    tf = P.positive if panel.log == "always" else (lambda v: v)
    by_group: dict[str, list] = {}
    for item in series:
        by_group.setdefault(seed_group_key(item[0]), []).append(item)
    for members in by_group.values():
        band = group_band([(x, y) for _, x, y in members]) if len(members) >= 2 else None
        if band is None or len(band[0]) < 1:
            for r, x, y in members:
                ax.plot(x, tf(y), lw=1.3, marker="." if len(x) < 30 else None, color=colors[id(r)],
                        label=r.label or r.name)
            continue
        color = colors[id(members[0][0])]
        for r, x, y in members:
            ax.plot(x, tf(y), lw=0.6, alpha=0.45, color=color)
        gx, mean, lo, hi = band
        name = members[0][0].group or members[0][0].label or members[0][0].name
        ax.plot(gx, tf(mean), lw=1.8, color=color, marker="." if len(gx) < 30 else None,
                label=f"{name}: mean of {len(members)} seeds ± 95 % t band")
        ax.fill_between(gx, tf(lo), tf(hi), color=color, alpha=0.2, lw=0)
    every = np.concatenate([y for _, _, y in series])
    # log when the runs differ by orders of magnitude (their largest values), not because a curve starts at 0
    logy = panel.log == "always" or (panel.log == "auto" and P.spans_decades([np.nanmax(np.abs(y)) for _, _, y in series]))
    if logy and np.isfinite(P.positive(every)).any():
        ax.set_yscale("log")
        if panel.log == "auto":
            for line in ax.get_lines():
                line.set_ydata(P.positive(line.get_ydata()))
    ax.set_ylabel(panel.ylabel + (" (log)" if logy and "log" not in panel.ylabel else ""))
    P.step_axis(ax, "window centre (optimizer step)" if panel.x == "centre" else
                "reheating step" if panel.source == "reheat" else "optimizer step")
    if panel.stem == "update_alignment":
        floors = {r.get("update_alignment.noise_floor.mean_abs_cos") for r, _, _ in series} - {None}
        for f in sorted(floors):
            _reference_line(ax, f, f"noise floor √(2/πD) = {f:.1e}")
    if panel.stem == "p_ood":
        for t, rule in sorted({chance_threshold(r) for r, _, _ in series}):
            _reference_line(ax, t, f"chance ({rule}) = {t:.3f}")
        ax.set_ylim(-0.02, 1.02)
    if panel.stem == "rho":
        ax.set_ylim(0, 1.02)
    if panel.stem == "reheat_a":
        ax.axhline(0, color="0.6", lw=0.6)
    return True


def overlay_figures(runs: list[Run], out_dir: Path) -> list[str]:
    """Write `overlay.png` (all panels) and one `overlay_<quantity>.png` per panel; returns names."""
    runs = [r for r in runs if r.ok or r.eval]
    if not runs:
        return []
    plt = P.pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = group_colors(runs)
    panels = list(PANELS) + ([REHEAT_PANEL] if any(r.summary.reheat_steps for r in runs) else [])
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw_panel(ax, runs, panel, colors)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = [], []
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(seed_group_key(r), []).append(r)
    for members in groups.values():
        r = members[0]
        handles.append(plt.Line2D([], [], color=colors[id(r)], lw=2))
        labels.append(f"{r.group or r.label or r.name}: mean of {len(members)} seeds ± 95 % t band (thin: seeds)"
                      if len(members) > 1 else r.label or r.name)
    ncol = min(3, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.03 * math.ceil(len(labels) / ncol), 1, 1))
    written = [P.save(plt, fig, out_dir / "overlay.png").name]
    for panel in panels:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if draw_panel(ax, runs, panel, colors):
            ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
            fig.tight_layout()
            written.append(P.save(plt, fig, out_dir / f"overlay_{panel.stem}.png").name)
        else:
            plt.close(fig)
    return written
