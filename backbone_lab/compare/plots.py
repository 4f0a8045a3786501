"""Overlay plots across runs: a(t), ‖r(t)‖, ρ(t), p_ood(t), val loss(t) (+ reheating a(t))."""

from __future__ import annotations

import math
from pathlib import Path

from backbone_lab.compare.runs import Run

PANELS = (  # (file stem, title, source, x column, y column, log y)
    ("a_t", "a(t): drift along the backbone", "timeseries", "step", "a_t", False),
    ("norm_r", "||r(t)||: transverse residual", "timeseries", "step", "norm_r_t", False),
    ("rho", "rho(t): adjacent rolling-window alignment", "rolling", "centre", "rho_next", False),
    ("p_ood", "p_ood (OOD probe accuracy)", "eval", "step", "p_ood", False),
    ("val_loss", "validation loss", "eval", "step", "val_loss", True),
)


def _series(run: Run, source: str, x: str, y: str) -> tuple[list[float], list[float]]:
    data = getattr(run, source)
    xs, ys = data.get(x) or [], data.get(y) or []
    pts = [(a, b) for a, b in zip(xs, ys) if math.isfinite(a) and math.isfinite(b)]
    return [p[0] for p in pts], [p[1] for p in pts]


def overlay_figures(runs: list[Run], out_dir: Path) -> list[str]:
    """Write `overlay.png` (all panels) and one `overlay_<quantity>.png` per panel; returns names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.ok or r.eval]
    if not runs:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    panels = list(PANELS)
    if any(r.summary.reheat_steps for r in runs):
        panels.append(("reheat_a", "reheating: a(t) in the source backbone frame", "reheat", "steps", "a", False))

    def draw(ax, stem, title, source, x, y, logy):
        any_line = False
        for r in runs:
            if source == "reheat":
                xs, ys = r.summary.reheat_steps, r.summary.reheat_a
                pts = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            else:
                xs, ys = _series(r, source, x, y)
            if xs:
                ax.plot(xs, ys, label=r.label or r.name, lw=1.2)
                any_line = True
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step" if x != "centre" else "window centre (step)", fontsize=8)
        if logy and any_line:
            ax.set_yscale("log")
        ax.tick_params(labelsize=7)
        return any_line

    n = len(panels)
    cols = 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    handles, labels = [], []
    for ax, spec in zip(axes.flat, panels):
        draw(ax, *spec)
        h, lab = ax.get_legend_handles_labels()
        if len(lab) > len(labels):
            handles, labels = h, lab
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(out_dir / "overlay.png", dpi=110)
    plt.close(fig)
    written.append("overlay.png")
    for spec in panels:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        if draw(ax, *spec):
            ax.legend(fontsize=7, frameon=False)
            fig.tight_layout()
            fig.savefig(out_dir / f"overlay_{spec[0]}.png", dpi=110)
            written.append(f"overlay_{spec[0]}.png")
        plt.close(fig)
    return written
