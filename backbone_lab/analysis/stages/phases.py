"""Stage ``phases``: early / late phase backbones v_E, v_L and A_E(t), A_L(t) (PAPER_MAP §5.5).

v_E from (anchor, boundary] relative to θ(anchor), v_L from (boundary, last] relative to
θ(boundary), both row-normalised PC1; A_E(w) = |⟨v_roll(w), v_E⟩|, A_L(w) = |⟨v_roll(w), v_L⟩|
with the rolling windows of the ``rolling`` stage (when it ran).

Summary block ``phases`` (or ``{"skipped": why}``); columns A_E, A_L of ``rolling.csv``; figure
``phases.png``. Flag ``few_phase_rows``: a phase with fewer than `MIN_PHASE_ROWS` drift rows
(its PC1 is large by construction).
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.phases import PhaseResult, default_boundary, phase_backbones
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import CsvTable, Flag, Number, StageResult
from backbone_lab.analysis.stages.rolling import ROLLING_CSV

MIN_PHASE_ROWS = 3


class PhasesStage:
    name = "phases"
    numbers = (
        Number("phase_overlap", "abs_overlap_vE_vL", "abs cos",
               "|⟨v_E, v_L⟩| of the phase backbones before / after the phase boundary (paper §4.3: 0.32)",
               aliases=("phase_overlap_vE_vL",), absent="no phase backbones (phases stage skipped: too few rows per phase)"),
        Number("phase_pc1_early_pct", "pc1_early_pct", "%", "PC1 share of the early phase's row-normalised drift (paper §4.3: 60 %)"),
        Number("phase_pc1_late_pct", "pc1_late_pct", "%", "PC1 share of the late phase's row-normalised drift (paper §4.3: 81 %)"),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        roll = ctx.maybe("rolling")
        title = "## Phase backbones (paper §4.3–4.4)\n\n"
        try:
            boundary = ctx.cfg.phase_boundary if ctx.cfg.phase_boundary is not None else default_boundary(ctx.rows)
            ph = phase_backbones(ctx.gram, ctx.steps, ctx.anchor, boundary)
        except ValueError as e:
            tables = []
            if roll is not None:  # keep the rolling.csv columns (empty)
                nan = [[float("nan"), float("nan")] for _ in range(len(roll.start))]
                tables = [CsvTable(ROLLING_CSV, ["A_E", "A_L"], nan)]
            return StageResult(summary={"skipped": str(e)}, report=title + f"Phase backbones skipped: {e}.\n", tables=tables)
        block = {**ph.summary(), "normalisation": "rownorm", **ctx.common}
        tables, ae, al = [], None, None
        if roll is not None:
            ae = roll.alignment_with(ctx.gram, ph.v_early)
            al = roll.alignment_with(ctx.gram, ph.v_late)
            block["A_E_mean"] = float(ae.mean())
            block["A_L_mean"] = float(al.mean())
            tables = [CsvTable(ROLLING_CSV, ["A_E", "A_L"], [[float(ae[w]), float(al[w])] for w in range(len(ae))])]
        flags = []
        if min(ph.n_early, ph.n_late) < MIN_PHASE_ROWS:
            flags.append(Flag("few_phase_rows", f"phase PCs from {ph.n_early} early and {ph.n_late} late drift rows: "
                                                "a PC1 of so few rows is large by construction"))
        figures = [self.figure(ctx, roll, ph, ae, al)] if ctx.cfg.figures and roll is not None else []
        report = (title + f"Boundary {block['boundary_step']}: PC1 early {fmt(block['pc1_early_pct'], 1)} % ({ph.n_early} rows), "
                  f"late {fmt(block['pc1_late_pct'], 1)} % ({ph.n_late} rows), |⟨v_E, v_L⟩| = {fmt(block['abs_overlap_vE_vL'])} "
                  f"({fmt(block['angle_deg'], 1)}°)."
                  + (f" Mean A_E {fmt(block['A_E_mean'])}, mean A_L {fmt(block['A_L_mean'])}." if ae is not None else "")
                  + "\n\n" + ("![phases](phases.png)\n" if figures else ""))
        return StageResult(summary=block, report=report, figures=figures, tables=tables, flags=flags, data=ph)

    @staticmethod
    def figure(ctx: AnalysisContext, roll, ph: PhaseResult, ae: np.ndarray, al: np.ndarray):
        plt = P.pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        if len(roll.centre) >= 2:
            ax.plot(roll.centre, ae, "-o", ms=3, label="A_E = |⟨v_roll(w), v_E⟩|")
            ax.plot(roll.centre, al, "-s", ms=3, label="A_L = |⟨v_roll(w), v_L⟩|")
            ax.axvline(ph.boundary, color="grey", ls=":", lw=1, label=f"phase boundary {ph.boundary}")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=7)
        else:
            P.not_enough(ax, f"not enough snapshots: {len(roll.centre)} rolling window(s)")
        ax.set_ylabel("alignment with phase backbone (|cos|, 0–1)")
        P.step_axis(ax, "optimizer step (window centre)")
        ax.set_title(f"|⟨v_E, v_L⟩| = {ph.overlap:.3f} ({ph.angle_deg:.1f}°)", fontsize=9)
        P.title_and_caption(fig, "Early and late phase backbones seen from the rolling windows", ctx.common,
                            f"v_E from steps ≤ {ph.boundary}, v_L after it")
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.2, top=0.84)
        return P.save(plt, fig, ctx.out_dir / "phases.png")
