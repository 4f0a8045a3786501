"""Stage ``controls``: did the run learn, and is its backbone the weight-decay shrinkage? (paper §5 controls)

A control run (e.g. plain SGD at the paper's learning rate) that does not learn still drifts: weight
decay shrinks θ toward 0, so its backbone is θ(anchor) itself and every comparison with it holds
trivially. This stage records, at the top level of summary.json:

* ``shrinkage_cos``: |cos(v_b, θ(anchor))| of the analysis backbone v_b (``analysis.shrinkage``;
  ≈ 1: the backbone is the shrinkage direction). With ``project_out_anchor`` the backbone is
  orthogonal to θ(anchor) by construction; the block then also holds the unprojected backbone's
  value (``shrinkage_cos_unprojected``).
* ``learning``: {val_loss_first, val_loss_last, drop, step_first, step_last} from the run's
  eval_metrics.csv (first and last evaluation with a finite val_loss; drop = first − last, in
  nats per token), or None without evaluations.

Summary block ``controls`` holds both plus the anchor norm. The inner products with θ(anchor) come
from the streamed Gram pass (``AnalysisContext.anchor_inner``); a context without them (a stage
driven by hand) pays one extra pass over the analysed snapshots' subset columns.
"""

from __future__ import annotations

import numpy as np

from backbone_lab.analysis.context import AnalysisContext
from backbone_lab.analysis.gram import coeff_rows
from backbone_lab.analysis.pca import pca_rows
from backbone_lab.analysis.report import fmt
from backbone_lab.analysis.shrinkage import AnchorInner, anchor_inner_products, shrinkage_cos
from backbone_lab.analysis.stage import StageResult


def learning_record(metrics: dict | None) -> dict | None:
    """{val_loss_first, val_loss_last, drop, step_first, step_last} of eval columns (None: no val_loss)."""
    if not metrics or "val_loss" not in metrics:
        return None
    v = np.asarray(metrics["val_loss"], dtype=np.float64)
    ok = np.nonzero(np.isfinite(v))[0]
    if not len(ok):
        return None
    i0, i1 = int(ok[0]), int(ok[-1])
    return {"val_loss_first": float(v[i0]), "val_loss_last": float(v[i1]), "drop": float(v[i0] - v[i1]),
            "step_first": int(metrics["step"][i0]), "step_last": int(metrics["step"][i1])}


class ControlsStage:
    name = "controls"
    requires = ("decomposition",)

    def run(self, ctx: AnalysisContext) -> StageResult:
        vb = ctx.need("decomposition").coeffs
        inner: AnchorInner = ctx.anchor_inner
        if inner is None:
            inner = anchor_inner_products(ctx.reader, [int(s) for s in ctx.gram.steps], ctx.gram.ref_step,
                                          ctx.reader.subset_columns(ctx.cfg.subset), ctx.cfg.chunk_mb << 20)
        # projected drifts x_i − (p_i/q) θ(anchor) have zero inner product with θ(anchor)
        cos = shrinkage_cos(ctx.gram, vb, AnchorInner(np.zeros_like(inner.p), inner.q) if ctx.cfg.project_out_anchor else inner)
        learning = learning_record(ctx.metrics)
        block = {"shrinkage_cos": cos, "anchor_norm": float(np.sqrt(max(inner.q, 0.0))), "learning": learning,
                 "projected_out_anchor": bool(ctx.cfg.project_out_anchor), **ctx.common}
        if ctx.cfg.project_out_anchor and inner.q > 0:  # the backbone the paper's drifts would give
            from dataclasses import replace

            g0 = replace(ctx.gram, G=ctx.gram.G + np.outer(inner.p, inner.p) / inner.q)
            C = coeff_rows(len(g0.steps), g0.indices(ctx.rows), g0.index(ctx.anchor))
            p0 = pca_rows(g0, C, row_normalise=ctx.cfg.normalisation == "rownorm", n_dirs=1)
            block["shrinkage_cos_unprojected"] = shrinkage_cos(g0, p0.v1, inner)
        lt = ("no val_loss in eval_metrics.csv" if learning is None else
              f"val loss {fmt(learning['val_loss_first'], 4)} (step {learning['step_first']}) → {fmt(learning['val_loss_last'], 4)} "
              f"(step {learning['step_last']}), drop {fmt(learning['drop'], 4)}")
        report = ("## Controls: learning and the shrinkage direction\n\n"
                  f"|cos(v_b, θ(anchor))| = {fmt(cos, 4)} (≈ 1: the backbone is weight decay shrinking θ(anchor), not learning)"
                  + (f"; θ(anchor) projected out before the PCA (unprojected backbone: {fmt(block.get('shrinkage_cos_unprojected'), 4)})"
                     if ctx.cfg.project_out_anchor else "")
                  + f". Learning: {lt}.\n")
        return StageResult(summary=block, report=report, top_level={"shrinkage_cos": cos, "learning": learning}, data=block)
