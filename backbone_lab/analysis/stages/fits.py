"""Stage ``fits``: power laws |a(t)| = C_a t^γ_a and ‖r(t)‖ = C_r t^γ_r per window (PAPER_MAP §5.6, W13).

OLS in natural-log space on lo < t ≤ hi (raw step numbers), R² in log space, n reported.
Windows: ``fit_windows``, else the PAPER_MAP §5.6 windows for runs reaching 10k, else halves/quarters.
Summary block ``fits``; figure ``loglog.png``. Flag ``few_fit_points``: a window fitted on fewer
than `MIN_FIT_POINTS` points (two points give R² = 1 by construction).
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.powerlaw import default_windows, regime_fits
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import Flag, StageResult

MIN_FIT_POINTS = 3
ADEQUATE_R2 = 0.9  # a power law below this R² (log space) is drawn dashed and called a poor fit


def adequate_fit(r2: float | None, n: int | None) -> bool:
    """Whether a fit is good enough to be drawn as a result: R² ≥ `ADEQUATE_R2` on ≥ `MIN_FIT_POINTS`."""
    # judged on the R² as printed (two decimals): a printed "R² = 0.90" is never called poor
    return r2 is not None and n is not None and round(float(r2), 2) >= ADEQUATE_R2 and n >= MIN_FIT_POINTS


def fit_windows(cfg: AnalysisConfig, last_step: int) -> list[tuple[int, int]]:
    """The (lo, hi] windows of the fits and correlations of a run ending at `last_step`."""
    return [tuple(w) for w in cfg.fit_windows] if cfg.fit_windows else default_windows(int(last_step))


def r2_cell(r2: float | None, n: int | None) -> str:
    """R² for the report table, marked "poor" when the fit is not adequate (`adequate_fit`)."""
    return fmt(r2, 2) if adequate_fit(r2, n) or r2 is None else f"{fmt(r2, 2)} (poor)"


class FitsStage:
    name = "fits"
    requires = ("decomposition",)

    def run(self, ctx: AnalysisContext) -> StageResult:
        dec = ctx.need("decomposition")
        st = np.asarray(ctx.steps)
        windows = fit_windows(ctx.cfg, st[-1])
        by_window = regime_fits(st, dec.a, dec.norm_r, windows)
        block = {"windows": [list(w) for w in windows], "rule": "OLS ln y = g ln t + ln C on lo < t <= hi, y > 0; R2 in log space",
                 "a": "abs(a(t))", "by_window": by_window, **ctx.common}
        thin = [name for name, f in by_window.items() if min(f["n_a"], f["n_r"]) < MIN_FIT_POINTS]
        flags = [Flag("few_fit_points", f"power-law windows {thin} have fewer than {MIN_FIT_POINTS} points "
                                        "(two points fit exactly: R² = 1 means nothing)")] if thin else []
        figures = [self.figure(ctx, dec, by_window)] if ctx.cfg.figures else []
        lines = ["## Power laws (paper §4.5)\n", "| window | γ_a | R²_a | n_a | γ_r | R²_r | n_r |\n|---|---|---|---|---|---|---|"]
        for name, f in by_window.items():
            lines.append(f"| {name} | {fmt(f['gamma_a'])} | {r2_cell(f['R2_a'], f['n_a'])} | {f['n_a']} | "
                         f"{fmt(f['gamma_r'])} | {r2_cell(f['R2_r'], f['n_r'])} | {f['n_r']} |")
        lines.append(f"\n_poor_: R² < {ADEQUATE_R2} or fewer than {MIN_FIT_POINTS} points — not a power law; "
                     "dashed in the figure.\n")
        lines.append("![loglog](loglog.png)\n" if figures else "")
        return StageResult(summary=block, report="\n".join(lines), figures=figures, flags=flags, data=windows)

    @staticmethod
    def figure(ctx: AnalysisContext, dec, fits: dict):
        plt = P.pyplot()
        st = np.asarray(ctx.steps)
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.8))
        dropped = []
        for ax, y, key, lab in ((axes[0], np.abs(dec.a), "a", "|a(t)|, along the backbone (parameter units)"),
                                (axes[1], dec.norm_r, "r", "‖r(t)‖, transverse (parameter units)")):
            m = (st > 0) & (y > 0)
            dropped += [int(s) for s in st[~m]]
            ax.set_xlabel("optimizer step (log)")
            ax.set_ylabel(lab + " (log)")
            if m.sum() < 2:
                P.not_enough(ax, f"not enough snapshots: {int(m.sum())} positive value(s) after step 0")
                continue
            ax.loglog(st[m], y[m], "ko", ms=3, alpha=0.6, label="data")
            for i, (name, f) in enumerate(fits.items()):
                g, C, r2, n = f.get(f"gamma_{key}"), f.get(f"C_{key}"), f.get(f"R2_{key}"), f.get(f"n_{key}")
                inside = m & (st > f["lo"]) & (st <= f["hi"])
                if g is None or inside.sum() < 2:
                    continue
                t = np.geomspace(st[inside].min(), st[inside].max(), 50)  # the line spans its data only
                good = adequate_fit(r2, n)
                ax.loglog(t, C * t**g, lw=2.0 if good else 1.0, ls="-" if good else "--", color=f"C{i}",
                          alpha=1.0 if good else 0.8,
                          label=f"{name}: γ = {g:.2f}, R² = {r2:.2f}, n = {n}" + ("" if good else " (poor fit)"))
            P.readable_log_ticks(ax, "x")
            P.readable_log_ticks(ax, "y")
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
        axes[0].set_title("along the backbone")
        axes[1].set_title("transverse residual")
        note = (f"solid: R² ≥ {ADEQUATE_R2} on ≥ {MIN_FIT_POINTS} points; dashed: poor fits, shown for reference. "
                f"Lines span the snapshots inside their window.")
        if dropped:
            note += f" Not on the log axes: step {', '.join(map(str, sorted(set(dropped))[:3]))}" + \
                    (" …" if len(set(dropped)) > 3 else "") + " (zero distance from the anchor)."
        P.title_and_caption(fig, "Power-law fits |a(t)| ∝ t^γ and ‖r(t)‖ ∝ t^γ per window", ctx.common, note)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.39, top=0.88, wspace=0.28)
        return P.save(plt, fig, ctx.out_dir / "loglog.png")
