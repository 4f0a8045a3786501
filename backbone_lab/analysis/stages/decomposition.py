"""Stage ``decomposition``: a(t), ‖r(t)‖, ‖Δθ(t)‖, f_b(t) along the global backbone (PAPER_MAP §5.3, W9).

v_b = the PC1 of the configured normalisation (stage ``pca``), sign-fixed so a(final) > 0.
Summary block ``decomposition``; table ``timeseries.csv`` (the reference's CSV layout: the
decomposition plus the eval metrics at each analysed step, empty where not evaluated); figure
``decomposition.png``. In-memory: the `Decomposition` (``coeffs`` = the unit, sign-fixed v_b).
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.decomposition import Decomposition, decompose
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import CsvTable, Number, StageResult

TIMESERIES_CSV = "timeseries.csv"
EVAL_COLUMNS = ("p_ood", "p_in", "val_loss", "train_loss", "lr", "lambda")


class DecompositionStage:
    name = "decomposition"
    requires = ("pca",)
    numbers = (
        Number("drift", "norm_delta_final", "parameter units", "‖θ(final) − θ(anchor)‖ of the analysis subset", headline=True,
               aliases=("drift_final", "drift_norm_final")),
        Number("a_final", "a_final", "parameter units", "backbone coordinate a(final) = ⟨Δθ(final), v_b⟩ (paper Eq. 7)"),
        Number("backbone_frac_final", "backbone_frac_final", "fraction", "f_b = a² / ‖Δθ‖² at the last analysed step (paper Eq. 9)", headline=True),
        Number("backbone_frac_mean", "backbone_frac_mean", "fraction", "mean f_b over the steps after the anchor (the paper's 68–72 %)", headline=True),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        main = ctx.need("pca").main
        dec = decompose(ctx.gram, main.v1, ctx.steps, ctx.anchor)
        block = {**dec.summary(), "backbone_normalisation": ctx.cfg.normalisation, **ctx.common}
        ev = {c: ctx.eval_column(c) for c in EVAL_COLUMNS}
        rows = [[int(s), dec.a[i], dec.norm_r[i], dec.norm_delta[i], dec.backbone_frac[i], dec.a_dot[i], dec.r_dot[i]]
                + [float(ev[c][i]) for c in EVAL_COLUMNS] for i, s in enumerate(ctx.steps)]
        table = CsvTable(TIMESERIES_CSV, ["step", "a_t", "norm_r_t", "norm_delta_t", "backbone_frac", "a_dot", "r_dot", *EVAL_COLUMNS], rows)
        figures = [self.figure(ctx, dec, block)] if ctx.cfg.figures else []
        d = block
        report = (
            "## Backbone decomposition (paper §3.3)\n\n"
            f"v_b = global {d['backbone_normalisation']} PC1, sign convention {d['sign_convention']} (flipped: {d['sign_flipped']}). "
            f"a(final) = {fmt(d['a_final'])}, ‖r(final)‖ = {fmt(d['norm_r_final'])}, ‖Δθ(final)‖ = {fmt(d['norm_delta_final'])}; "
            f"f_b final {fmt(100 * d['backbone_frac_final'], 1)} %, mean over steps {fmt(100 * (d['backbone_frac_mean'] or 0), 1)} %; "
            f"a(t) peaks at {fmt(d['a_peak'])} (step {d['a_peak_step']}).\n\n"
            + ("![decomposition](decomposition.png)\n" if figures else "")
        )
        return StageResult(summary=block, report=report, figures=figures, tables=[table], data=dec)

    @staticmethod
    def figure(ctx: AnalysisContext, dec: Decomposition, block: dict):
        plt = P.pyplot()
        st = np.asarray(ctx.steps)
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
        ax = axes[0]
        ax.plot(st, dec.a, "-o", ms=2.5, label="a(t) = ⟨Δθ, v_b⟩")
        ax.plot(st, dec.norm_r, "-s", ms=2.5, label="‖r(t)‖ (transverse)")
        ax.plot(st, dec.norm_delta, "--", color="grey", lw=1, label="‖Δθ(t)‖")
        P.step_axis(ax)
        ax.set_ylabel("distance from θ(anchor) (L2, parameter units)")
        handles, labels = ax.get_legend_handles_labels()
        p_ood = ctx.p_ood
        m = np.isfinite(p_ood)
        if m.sum() >= 2:
            ax2 = ax.twinx()
            ax2.plot(st[m], p_ood[m], color="#C44E52", lw=1, alpha=0.6, label="p_ood (right axis)")
            ax2.set_ylabel("p_ood (OOD probe accuracy, 0–1)", color="#C44E52")
            ax2.set_ylim(0, 1)
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            ax.set_zorder(ax2.get_zorder() + 1)  # curves and legend above the p_ood line
            ax.patch.set_visible(False)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, loc="upper left", fontsize=7)
        ax.set_title("along the backbone and transverse to it (sign: a(final) > 0)", fontsize=9)
        ax = axes[1]
        ax.plot(st[1:], 100 * dec.backbone_frac[1:], "-o", ms=2.5, color="#55A868")
        P.step_axis(ax)
        ax.set_ylabel("backbone fraction f_b = a²/‖Δθ‖² (%)")
        ax.set_ylim(0, 101)
        ax.set_title(f"f_b final {100 * block['backbone_frac_final']:.1f} %, mean {100 * (block['backbone_frac_mean'] or 0):.1f} %",
                     fontsize=9)
        P.title_and_caption(fig, "Drift from the anchor: backbone a(t) and transverse residual ‖r(t)‖", ctx.common)
        fig.subplots_adjust(left=0.07, right=0.97, bottom=0.19, top=0.84, wspace=0.4)
        return P.save(plt, fig, ctx.out_dir / "decomposition.png")
