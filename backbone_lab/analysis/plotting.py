"""Conventions shared by the per-run figures (matplotlib, Agg backend, PNG).

Every panel has a y label with its unit; quantities that span orders of magnitude get a log axis
(`log_if_wide`); a panel without enough points says so (`not_enough`) instead of staying empty;
step axes use plain integers (no offset / scientific notation). Each stage draws its own figures
with these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

WIDE_RATIO = 100.0  # positive values spanning more than this factor are drawn on a log axis


def pyplot():
    """matplotlib.pyplot with the Agg backend and the project's style."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "legend.framealpha": 0.8})
    return plt


def run_title(common: dict) -> str:
    """One line naming the selection: subset, anchor, cadence, T, D (kept for callers outside the
    per-run figures; those use `run_caption` under a title in words)."""
    dim = (f"sketched k={common['sketch_k']}/block ({common['dim']:,} numbers)" if common.get("sketch_k")
           else f"D={common['dim']:,}")
    return (f"subset={common['subset']}  anchor={common['anchor_step']}  cadence={common['cadence']}  "
            f"T={common['n_steps']}  {dim}")


def run_caption(common: dict) -> str:
    """The selection in words for a figure's caption: subset, anchor, cadence, T, D."""
    cadence = common["cadence"]
    every = ("every step" if cadence == 1 else f"every {cadence} steps") if cadence else "(every stored step)"
    dim = (f"sketched: k = {common['sketch_k']} per block, {common['dim']:,} numbers" if common.get("sketch_k")
           else f"D = {common['dim']:,}")
    return (f"{common['subset']} parameters ({dim}), drifts from step {common['anchor_step']}, "
            f"{common['n_steps']} snapshots {every}")


def title_and_caption(fig, title: str, common: dict | None = None, note: str | None = None) -> None:
    """A figure's title in words (top) and its parameters / a note in a small grey caption (bottom
    left). Leave room for both with `fig.subplots_adjust(top=..., bottom=...)`."""
    fig.suptitle(title, fontsize=11)
    caption = " · ".join(t for t in (run_caption(common) if common else None, note) if t)
    if caption:
        fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=7, color="0.4", wrap=True)


def step_axis(ax, label: str = "optimizer step") -> None:
    """Integer step ticks without offset or scientific notation."""
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def integer_axis(ax, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(nbins=10, integer=True))


def spans_decades(values: Sequence[float] | np.ndarray, ratio: float = WIDE_RATIO) -> bool:
    """Whether the positive finite values span more than `ratio` (max / min)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return len(v) >= 2 and float(v.max()) > ratio * float(v.min())


def log_if_wide(ax, values: Sequence[float] | np.ndarray, axis: str = "y", ratio: float = WIDE_RATIO) -> bool:
    """Switch `axis` to log scale when the values span more than `ratio`; returns whether it did."""
    if not spans_decades(values, ratio):
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    return True


def readable_log_ticks(ax, axis: str = "y") -> None:
    """Plain-number ticks at 1, 2, 5 × 10^k on a log axis spanning few decades (no overlapping
    minor labels such as 2×10² 3×10² ...); axes spanning ≥ 3 decades keep 10^k labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    a.set_minor_formatter(NullFormatter())
    if lo > 0 and hi / lo < 1e3:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))


def positive(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Values with non-positive entries masked (NaN) for log axes."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(v > 0, v, np.nan)


def zoomed_limits(values, floor: float = 0.0, ceil: float = 1.0, min_span: float = 0.05) -> tuple[float, float]:
    """(lo, hi) of an axis that shows `values` (a quantity bounded by [floor, ceil]) with a 10 %
    margin, at least `min_span` wide, clipped to the bounds; the bounds themselves when the data
    fill more than half of them."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return floor, ceil
    lo, hi = float(v.min()), float(v.max())
    if hi - lo > 0.5 * (ceil - floor):
        return floor, ceil + 0.02 * (ceil - floor)
    pad = max(0.1 * (hi - lo), (min_span - (hi - lo)) / 2, 0.005)
    top = min(ceil + 0.005 * (ceil - floor), hi + pad)
    bottom = max(floor, min(lo - pad, top - min_span))  # data near a bound: the span grows away from it
    return bottom, max(top, bottom + min_span)


def not_enough(ax, message: str) -> None:
    """Replace an empty panel by a centred message (e.g. "not enough snapshots: ...")."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def save(plt, fig, path: Path) -> Path:
    """Save a figure as PNG and close it; returns the path."""
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
