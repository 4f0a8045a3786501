"""Stage ``fits``: power laws |a(t)| = C_a t^γ_a and ‖r(t)‖ = C_r t^γ_r per window (SPEC §5.6, W13).

OLS in natural-log space on lo < t ≤ hi (raw step numbers), R² in log space, n reported.
Windows: ``fit_windows``, else the SPEC §5.6 windows for runs reaching 10k, else halves/quarters.
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


def fit_windows(cfg: AnalysisConfig, last_step: int) -> list[tuple[int, int]]:
    """The (lo, hi] windows of the fits and correlations of a run ending at `last_step`."""
    return [tuple(w) for w in cfg.fit_windows] if cfg.fit_windows else default_windows(int(last_step))


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
        lines = ["## Power laws (SPEC §5.6)\n", "| window | γ_a | R²_a | n_a | γ_r | R²_r | n_r |\n|---|---|---|---|---|---|---|"]
        for name, f in by_window.items():
            lines.append(f"| {name} | {fmt(f['gamma_a'])} | {fmt(f['R2_a'])} | {f['n_a']} | {fmt(f['gamma_r'])} | {fmt(f['R2_r'])} | {f['n_r']} |")
        lines.append("\n![loglog](loglog.png)\n" if figures else "")
        return StageResult(summary=block, report="\n".join(lines), figures=figures, flags=flags, data=windows)

    @staticmethod
    def figure(ctx: AnalysisContext, dec, fits: dict):
        plt = P.pyplot()
        st = np.asarray(ctx.steps)
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
        for ax, y, key, lab in ((axes[0], np.abs(dec.a), "a", "|a(t)| (parameter units)"),
                                (axes[1], dec.norm_r, "r", "‖r(t)‖ (parameter units)")):
            m = (st > 0) & (y > 0)
            ax.set_xlabel("optimizer step (log)")
            ax.set_ylabel(lab + " (log)")
            if m.sum() < 2:
                P.not_enough(ax, f"not enough snapshots: {int(m.sum())} positive value(s) after step 0")
                continue
            ax.loglog(st[m], y[m], "ko", ms=3, alpha=0.6, label="data")
            for i, (name, f) in enumerate(fits.items()):
                g, C = f.get(f"gamma_{key}"), f.get(f"C_{key}")
                if g is None:
                    continue
                lo, hi = max(f["lo"], st[m][0]), min(f["hi"], st[m][-1])
                t = np.geomspace(lo, hi, 50) if hi > lo else np.array([lo])
                ax.loglog(t, C * t**g, lw=1.5, color=f"C{i}", label=f"{name}: γ={g:.2f} (R²={f[f'R2_{key}']:.2f}, n={f[f'n_{key}']})")
            P.readable_log_ticks(ax, "x")
            P.readable_log_ticks(ax, "y")
            ax.legend(fontsize=6, loc="best")
        fig.suptitle("power-law fits  " + P.run_title(ctx.common), fontsize=8)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.28)
        return P.save(plt, fig, ctx.out_dir / "loglog.png")
