"""Stage ``per_block``: per-block raw PCA (Table 2), update alignment (variant 1), c(w) (SPEC §5.2, §5.8).

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
        figures = [self.figure(ctx, block)] if cfg.figures else []
        lines = ["## Per block (SPEC §5.2, raw PCA)\n",
                 "| block | D | PC1 % | k95 | k99 | mean \\|cos(u, v_b)\\| | c(w) mean |\n|---|---|---|---|---|---|---|"]
        for n, b in block["blocks"].items():
            cwm = (b.get("cw") or {}).get("consecutive_abs_cos_mean")
            lines.append(f"| {n} | {b['dim']:,} | {fmt(b['pc1_pct'], 1)} | {b['k95']} | {b['k99']} | "
                         f"{fmt(b['update_alignment']['mean_abs_cos'])} | {fmt(cwm)} |")
        lines.append("\n![per block](per_block.png)\n" if figures else "")
        return StageResult(summary=block, report="\n".join(lines), figures=figures,
                           tables=[CsvTable(UA_CSV, UA_HEADER, rows)], data=backbones)

    @staticmethod
    def figure(ctx: AnalysisContext, block: dict):
        plt = P.pyplot()
        names = list(block["blocks"])
        b = [block["blocks"][n] for n in names]
        x = np.arange(len(names))
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
        ax.bar(x, [v["pc1_pct"] for v in b], width=0.6, color="#4C72B0")
        ax.set_ylabel("raw PC1 (% variance)")
        ax.set_ylim(0, 101)
        cos = np.array([v["update_alignment"]["mean_abs_cos"] or np.nan for v in b], dtype=float)
        floors = [noise_floor(v["dim"]) for v in b]
        ax2.bar(x, P.positive(cos), width=0.6, color="#55A868", label="mean |cos(u, v_b)|")
        ax2.hlines(floors, x - 0.4, x + 0.4, colors="#C44E52", linestyles="--", lw=1.5, label="noise floor √(2/πD)")
        ax2.set_yscale("log")
        ax2.set_ylim(min(floors) / 3, 1.0)
        P.readable_log_ticks(ax2, "y")
        ax2.set_ylabel("mean |cos(u, v_b)| (log)")
        for a in (ax, ax2):
            a.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, fontsize=8)
            a.set_xlabel("block")
        ax.set_title("per-block uncentered PCA")
        ax2.set_title("consecutive updates vs block backbone\n(dashed: noise floor √(2/πD))", fontsize=9)
        fig.suptitle(P.run_title(ctx.common), fontsize=8)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.8, wspace=0.3)
        return P.save(plt, fig, ctx.out_dir / "per_block.png")
