"""Stage ``pca``: global uncentered PCA of the drifts, raw and row-normalised (PAPER_MAP §5.1, W2).

Rows x_t = θ(t) − θ(anchor) for the analysed steps after the anchor. Explained fractions use the
total denominator Σσ² over all rows. The legacy ``top10_denominator`` reproduces the reference's
*row-normalised* fractions only (its truncated 10-component randomized SVD, W2); the reference's
raw fractions come from a full SVD (its committed ``explained_var_raw`` sums to 0.98 over the top
10), so raw always uses the total denominator.

Summary block ``pca``: ``raw`` / ``rownorm`` spectra and the ``denominator_rule``; table
``spectrum.csv``; figure ``spectrum.png``. In-memory: `PCAData` (the backbone of the configured
normalisation is ``main``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.pca import RowPCA, pca_rows
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.stage import CsvTable, Number, StageResult

N_REPORTED = 20  # singular values / fractions kept in summary.json
N_DIRECTIONS = 10  # principal directions kept as coefficients


@dataclass
class PCAData:
    raw: RowPCA
    rownorm: RowPCA
    main: RowPCA  # the configured normalisation: the global backbone v_b


def denominator_rule(top10: bool) -> str:
    if top10:
        return ("row-normalised: top-10 sigma^2 (legacy top10_denominator, the reference's truncated SVD); "
                "raw: total sum of sigma^2 over all rows (the reference's full SVD)")
    return "total sum of sigma^2 over all rows"


class PCAStage:
    name = "pca"
    numbers = (
        Number("pc1_rownorm_pct", "rownorm.pc1_pct", "%", "PC1 share of the row-normalised uncentered drift energy (paper §4.1)", headline=True),
        Number("pc1_raw_pct", "raw.pc1_pct", "%", "PC1 share of the raw uncentered drift energy (paper §4.1)", headline=True),
        Number("pc2_rownorm_pct", "rownorm.pc2_pct", "%", "PC2 share of the row-normalised drift energy (paper §4.1)"),
        Number("k95_rownorm", "rownorm.k95", "components", "components for 95 % of the row-normalised drift energy", headline=True),
        Number("k95_raw", "raw.k95", "components", "components for 95 % of the raw drift energy", headline=True),
    )

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg, gram, common = ctx.cfg, ctx.gram, ctx.common
        C = ctx.drift_rows()
        p_raw = pca_rows(gram, C, row_normalise=False, top10_denominator=False, n_dirs=max(cfg.switch_top_k, N_DIRECTIONS))
        p_rn = pca_rows(gram, C, row_normalise=True, top10_denominator=cfg.top10_denominator, n_dirs=N_DIRECTIONS)
        block = {
            "raw": {**p_raw.pca.summary(N_REPORTED), "normalisation": "raw", **common},
            "rownorm": {**p_rn.pca.summary(N_REPORTED), "normalisation": "rownorm", **common},
            "denominator_rule": denominator_rule(cfg.top10_denominator),
        }
        n = max(len(p_raw.pca.sigma), len(p_rn.pca.sigma))
        table = CsvTable("spectrum.csv", ["k", "sigma_raw", "explained_raw", "sigma_rownorm", "explained_rownorm"],
                         [[k + 1, p_raw.pca.sigma[k], p_raw.pca.explained[k], p_rn.pca.sigma[k], p_rn.pca.explained[k]] for k in range(n)])
        figures = [self.figure(ctx, p_raw, p_rn)] if cfg.figures else []
        pr, pn = block["raw"], block["rownorm"]
        report = "\n".join([
            "## Uncentered PCA (paper §3.1, §4.1)\n",
            "| rows | PC1 % | PC2 % | k95 | k99 | n rows |\n|---|---|---|---|---|---|",
            f"| raw | {fmt(pr['pc1_pct'], 2)} | {fmt(pr['pc2_pct'], 2)} | {pr['k95']} | {pr['k99']} | {pr['n_rows']} |",
            f"| row-normalised | {fmt(pn['pc1_pct'], 2)} | {fmt(pn['pc2_pct'], 2)} | {pn['k95']} | {pn['k99']} | {pn['n_rows']} |",
            f"\nDenominator: {block['denominator_rule']}.\n",
            "![spectrum](spectrum.png)\n" if figures else "",
        ])
        main = p_rn if cfg.normalisation == "rownorm" else p_raw
        return StageResult(summary=block, report=report, figures=figures, tables=[table], data=PCAData(p_raw, p_rn, main))

    @staticmethod
    def figure(ctx: AnalysisContext, p_raw: RowPCA, p_rn: RowPCA):
        plt = P.pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0))
        for ax, pr, lab in ((axes[0], p_raw, "raw drifts"), (axes[1], p_rn, "row-normalised drifts")):
            ex = pr.pca.explained
            n_show = min(len(ex), shown_components(pr.pca.k99))
            k = np.arange(1, n_show + 1)
            ax2 = ax.twinx()  # the cumulative curve lies behind the bars (ax is drawn above ax2)
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
            ax2.plot(k, 100 * pr.pca.cumulative[:n_show], "-", color="0.55", lw=1.2, marker=".", ms=4, label="cumulative (right axis)")
            ax2.axhline(95, color="#C44E52", ls=":", lw=1)
            ax2.text(n_show + 0.5, 94, "95 % ", color="#C44E52", fontsize=7, va="top", ha="right")
            ax2.set_ylim(0, 101)
            ax2.set_ylabel("cumulative explained (%)")
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            ax.bar(k, P.positive(100 * ex[:n_show]), color="#4C72B0", width=0.7, label="per component (left axis)")
            ax.annotate(f"{100 * ex[0]:.1f} %", (1, 100 * ex[0]), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, color="#4C72B0")
            ax.set_yscale("log")
            ax.set_ylim(top=100 * ex[0] * 4)  # headroom for the PC1 label
            ax.set_xlim(0.4, n_show + 0.6)
            ax.set_xlabel("component k")
            ax.set_ylabel("explained variance σ_k²/Σσ² (%, log)")
            P.integer_axis(ax, "x")
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
            ax.set_title(f"{lab}: PC1 {100 * ex[0]:.1f} %, k95 = {pr.pca.k95}, k99 = {pr.pca.k99}", fontsize=9)
        note = "shown: components 1 to max(k99, 10); the others explain < 1 % together"
        P.title_and_caption(fig, "How many directions the trajectory uses: uncentered PCA of the drifts", ctx.common, note)
        fig.subplots_adjust(left=0.08, right=0.92, bottom=0.2, top=0.84, wspace=0.5)
        return P.save(plt, fig, ctx.out_dir / "spectrum.png")


def shown_components(k99: int, least: int = 10) -> int:
    """Components a spectrum figure shows: up to k99, at least `least` (the rest explain < 1 %)."""
    return max(int(k99), least)
