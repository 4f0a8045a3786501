"""Stage ``per_block``: per-block raw PCA (Table 2), update alignment (variant 1), c(w) (PAPER_MAP §5.2, §5.8).

Only for ``subset=trunk`` with ``per_block``: the block Grams come from the same streamed pass
(``gram_groups``). Per block: raw uncentered PC1 of the drifts from the anchor, sign-fixed
a(final) > 0 (or unfixed with ``legacy_unsigned_blocks``, W9); cos of consecutive updates with it;
c(w) = |cos| of consecutive non-re-anchored raw windows and with the block backbone.

Summary block ``per_block``; rows of ``update_alignment.csv`` (subset = the block); figure
``per_block.png``. In-memory: block name -> unit backbone coefficients.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis import plotting as P
from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.decomposition import fix_sign
from backbone_lab.analysis.gram import coeff_rows
from backbone_lab.analysis.noise_floor import noise_floor
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.rolling import per_block_cw
from backbone_lab.analysis.stage import CsvTable, StageResult
from backbone_lab.analysis.stages.update_alignment import UA_CSV, UA_HEADER, ua_rows
from backbone_lab.analysis.update_alignment import alignment_summary, consecutive_pairs, update_alignment


def block_groups(reader, cfg: AnalysisConfig) -> list[str]:
    """Names of the per-block subsets (``block{i}`` or ``block{i}_ln``), [] when not applicable."""
    if not (cfg.per_block and cfg.subset == "trunk"):
        return []
    ln = cfg.per_block_ln if cfg.per_block_ln is not None else reader.has_non_trunk_block_tensors
    return [f"block{b}_ln" if ln else f"block{b}" for b in reader.blocks]


MIN_BLOCKS_FOR_FIGURE = 6  # with fewer blocks the report's table is the whole story


class PerBlockStage:
    name = "per_block"

    def gram_groups(self, reader, cfg: AnalysisConfig) -> dict:
        return {name: reader.subset_columns(name) for name in block_groups(reader, cfg)}

    def run(self, ctx: AnalysisContext) -> StageResult:
        cfg = ctx.cfg
        names = block_groups(ctx.reader, cfg)
        if not names:
            return StageResult()
        T, ai = ctx.T, ctx.anchor_index
        ri = ctx.gram.indices(ctx.rows)
        pairs = consecutive_pairs(ctx.steps)
        block: dict = {"normalisation": "raw", "anchor_step": ctx.anchor, "cadence": ctx.cadence,
                       "sign": "unfixed (legacy)" if cfg.legacy_unsigned_blocks else "a(final) > 0", "blocks": {}}
        backbones: dict[str, np.ndarray] = {}
        rows = []
        for name in names:
            g = ctx.grams[name]
            pr = pca_rows(g, coeff_rows(T, ri, ai), row_normalise=False, n_dirs=1)
            c = pr.v1
            if not cfg.legacy_unsigned_blocks:
                c, _ = fix_sign(g, c, ai, T - 1)
            backbones[name] = c
            r = update_alignment(g, c, pairs, label="mid")
            rows += ua_rows(name, "consecutive", r)
            block["blocks"][name] = {"pc1_pct": 100 * pr.pca.pc1, "k95": pr.pca.k95, "k99": pr.pca.k99, "dim": g.dim,
                                     "update_alignment": alignment_summary(r, cfg.early_max_step, g.dim)}
        if len(ctx.rows) >= cfg.rolling_window:
            cw = per_block_cw({n: ctx.grams[n] for n in names}, ctx.rows, ctx.anchor, backbones,
                              window=cfg.rolling_window, stride=cfg.rolling_stride)
            for n, d in cw.items():
                block["blocks"][n]["cw"] = d
        figures = [self.figure(ctx, block)] if cfg.figures and len(names) >= MIN_BLOCKS_FOR_FIGURE else []
        lines = ["## Per block (paper Table 2, raw PCA)\n",
                 "| block | D | PC1 % | k95 | k99 | mean \\|cos(u, v_b)\\| | × noise floor | c(w) mean |\n|---|---|---|---|---|---|---|---|"]
        for n, b in block["blocks"].items():
            cwm = (b.get("cw") or {}).get("consecutive_abs_cos_mean")
            m = b["update_alignment"]["mean_abs_cos"]
            over = None if m is None else float(m) / noise_floor(b["dim"])
            lines.append(f"| {n} | {b['dim']:,} | {fmt(b['pc1_pct'], 1)} | {b['k95']} | {b['k99']} | "
                         f"{fmt(m)} | {fmt(over, 0)} | {fmt(cwm)} |")
        lines.append("\n![per block](per_block.png)\n" if figures else
                     f"\n(No figure for fewer than {MIN_BLOCKS_FOR_FIGURE} blocks: the table says it.)\n" if cfg.figures else "")
        return StageResult(summary=block, report="\n".join(lines), figures=figures,
                           tables=[CsvTable(UA_CSV, UA_HEADER, rows)], data=backbones)

    @staticmethod
    def figure(ctx: AnalysisContext, block: dict):
        plt = P.pyplot()
        names = list(block["blocks"])
        b = [block["blocks"][n] for n in names]
        x = np.arange(len(names))
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
        ax.bar(x, [v["pc1_pct"] for v in b], width=0.6, color="#4C72B0")
        ax.set_ylabel("raw PC1 (% variance)")
        ax.set_ylim(0, 101)
        cos = np.array([v["update_alignment"]["mean_abs_cos"] or np.nan for v in b], dtype=float)
        floors = np.array([noise_floor(v["dim"]) for v in b])
        ratio = cos / floors  # how far above a random direction each block's updates align
        ax2.bar(x, ratio, width=0.6, color="#55A868", label="mean |cos(u, v_b)| ÷ random-direction floor")
        ax2.axhline(1.0, color="#C44E52", ls="--", lw=1, label="random direction (= 1)")
        ax2.set_ylim(0, max(1.5, float(np.nanmax(ratio)) * 1.4) if np.isfinite(ratio).any() else 2)  # room for the legend
        ax2.set_ylabel("update alignment (× noise floor)")
        ax2.legend(fontsize=7, loc="upper right")
        for a in (ax, ax2):
            a.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, fontsize=8)
            a.set_xlabel("block")
        ax.set_title("share of the block's drift along its PC1", fontsize=9)
        ax2.set_title("consecutive updates vs the block's backbone", fontsize=9)
        P.title_and_caption(fig, "Per-block backbones", ctx.common, "noise floor √(2/πD) with D the block's size")
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.26, top=0.83, wspace=0.3)
        return P.save(plt, fig, ctx.out_dir / "per_block.png")
