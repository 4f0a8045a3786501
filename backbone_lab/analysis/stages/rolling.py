"""Stage ``rolling``: rolling-window backbones and the adjacent-window alignment ρ(t) (PAPER_MAP §5.4).

Windows of ``rolling_window`` consecutive analysed checkpoints (stride ``rolling_stride``),
re-anchored at their first checkpoint and row-normalised; ρ(w) = |⟨v_roll(w), v_roll(w+1)⟩|.
Summary block ``rolling`` (or ``{"skipped": why}``); table ``rolling.csv`` (start, end, centre,
pc1, rho_next; the ``phases`` stage adds A_E, A_L); figure ``rotation.png``.

Flags: ``rolling_skipped`` (fewer analysed steps than a window), ``few_rolling_windows`` (ρ from
fewer than `MIN_RHO_PAIRS` adjacent pairs: its mean / min / max are a handful of numbers),
``short_rolling_window`` (windows of fewer than `MIN_WINDOW_ROWS` drift rows: a window PC1 is
large by construction, ≥ 1/rows, and ρ is noisy).
"""

from __future__ import annotations

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.rolling import RollingResult, rolling_backbones
from backbone_lab.analysis.stage import CsvTable, Flag, Number, StageResult

ROLLING_CSV = "rolling.csv"
MIN_RHO_PAIRS = 5
MIN_WINDOW_ROWS = 4


class RollingStage:
    name = "rolling"
    numbers = (
        Number("rho_mean", "rho_mean", "abs cos", "mean ρ between adjacent rolling-window backbones (paper §4.2: 0.80)", headline=True,
               absent="no rolling-window analysis (fewer snapshots than a window)"),
        Number("rho_min", "rho_min", "abs cos", "smallest ρ between adjacent rolling-window backbones (paper §4.2: > 0.7 everywhere)",
               absent="no rolling-window analysis (fewer snapshots than a window)"),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg, rows = ctx.cfg, ctx.rows
        W = cfg.rolling_window
        if len(rows) < W + 1:
            why = f"needs > {W} analysed steps after the anchor, have {len(rows)}"
            return StageResult(summary={"skipped": why},
                               report=f"## Rolling backbone (paper §4.2)\n\nNot enough snapshots: rolling windows skipped ({why}).\n",
                               flags=[Flag("rolling_skipped", f"no rolling windows: {why} (lower rolling_window?)")])
        roll = rolling_backbones(ctx.gram, rows, window=W, stride=cfg.rolling_stride)
        block = {**roll.summary(), **ctx.common}
        flags = []
        if len(roll.rho) < MIN_RHO_PAIRS:
            flags.append(Flag("few_rolling_windows", f"ρ statistics come from only {len(roll.rho)} adjacent-window pair(s) "
                                                     f"({len(roll.start)} windows of W={W}); read them as anecdotes"))
        if W - 1 < MIN_WINDOW_ROWS:
            flags.append(Flag("short_rolling_window", f"each rolling window has only {W - 1} drift rows: window PC1 ≥ 1/{W - 1} "
                                                      "by construction and ρ is noisy"))
        table = CsvTable(ROLLING_CSV, ["start", "end", "centre", "pc1", "rho_next"],
                         [[int(roll.start[w]), int(roll.end[w]), float(roll.centre[w]), float(roll.pc1[w]),
                           float(roll.rho[w]) if w < len(roll.rho) else float("nan")] for w in range(len(roll.start))])
        figures = [self.figure(ctx, roll, block)] if cfg.figures else []
        report = (f"## Rolling backbone (paper §4.2)\n\n"
                  f"W = {block['window']}, re-anchored, row-normalised, {block['n_windows']} windows: mean ρ {fmt(block['rho_mean'])}, "
                  f"max {fmt(block['rho_max'])}, min {fmt(block['rho_min'])} at step {fmt(block['rho_argmin_step'], 0)}.\n\n"
                  + ("![rotation](rotation.png)\n" if figures else ""))
        return StageResult(summary=block, report=report, figures=figures, tables=[table], flags=flags, data=roll)

    @staticmethod
    def figure(ctx: AnalysisContext, roll: RollingResult, block: dict):
        plt = P.pyplot()
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        if len(roll.rho) >= 2:
            ax.plot(roll.rho_step, roll.rho, "-o", ms=3, label="ρ(t) = |⟨v_roll(w), v_roll(w+1)⟩|")
            lo, hi = P.zoomed_limits(roll.rho)
            ax.set_ylim(lo, hi)
            zoomed = lo > 0 or hi < 1
            ax.legend(fontsize=8, loc="best")
        else:
            zoomed = False
            P.not_enough(ax, f"not enough snapshots: {len(roll.start)} window(s) of W={roll.window} give {len(roll.rho)} ρ value(s)")
        ax.set_ylabel("ρ, adjacent windows (|cos|)\n" + ("axis zoomed to the data (range 0–1)" if zoomed else ""))
        ax.set_title(f"mean ρ {fmt(block['rho_mean'])}, min {fmt(block['rho_min'])}", fontsize=9)
        ax2.plot(roll.centre, 100 * roll.pc1, "-s", ms=3, color="#8172B2",
                 label=f"PC1 of each window of {roll.window} snapshots (% of its variance)")
        ax2.set_ylabel("window PC1 (% variance)")
        ax2.set_ylim(0, 101)
        ax2.legend(fontsize=8, loc="lower left")
        P.step_axis(ax2, "optimizer step (window centre)")
        P.title_and_caption(fig, f"Rotation of the rolling backbone (windows of {roll.window} snapshots)", ctx.common)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.89, hspace=0.2)
        return P.save(plt, fig, ctx.out_dir / "rotation.png")

